"""Profile ``wh.models.list()`` (or a raw client) against the loopback benchmark server.

Starts ``server.py`` in its own process, runs one client for a few seconds under
pyinstrument (``pip install pyinstrument``) or, with ``--cprofile``, the standard
library's cProfile, and prints the report::

    python benchmarks/profile_hot_path.py wishub-aiohttp -c 50
    python benchmarks/profile_hot_path.py wishub-httpx -c 50 --cprofile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
from pathlib import Path

from clients import CLIENTS, measure

__all__ = ["main"]

HERE = Path(__file__).parent


async def _run(name: str, url: str, concurrency: int, duration: float) -> dict[str, float]:
    async with CLIENTS[name](url, concurrency) as job:
        return await measure(job, concurrency, duration, warmup=0.3)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=list(CLIENTS))
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=3.0)
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of pyinstrument")
    parser.add_argument("--limit", type=int, default=35, help="cProfile rows to print")
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        port = server.stdout.readline().strip() if server.stdout else ""
        url = f"http://127.0.0.1:{port}/v1"
        if args.cprofile:
            profile = cProfile.Profile()
            result = profile.runcall(
                asyncio.run, _run(args.client, url, args.concurrency, args.duration)
            )
            stats = pstats.Stats(profile).strip_dirs().sort_stats("tottime")
            stats.print_stats(args.limit)
        else:
            from pyinstrument import Profiler  # noqa: PLC0415 - optional

            profiler = Profiler(interval=0.0002, async_mode="disabled")
            with profiler:
                result = asyncio.run(_run(args.client, url, args.concurrency, args.duration))
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        print(f"{args.client} c={args.concurrency}: {result['rps']:.0f} req/s under the profiler")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
