"""Fan-out benchmark: 200 keys x 5 calls against the fake with a fixed 20 ms latency.

Reports the wall time against the ideal (calls x latency / concurrency) and the
memory per key. The fake runs in its own process on loopback, so the client's
process measures only the client.

    python benchmarks/fanout.py [--keys 200] [--calls 5] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Literal

import anyio

from wishub_async import AsyncWishub
from wishub_async.models import ModelList

SERVER = """
import importlib.util, sys, anyio
from wishub_async.testing import FakeWishub

async def main():
    fake = FakeWishub(latency=float(sys.argv[1]))
    async with fake.serve() as url:
        print(url, flush=True)
        await anyio.sleep_forever()

uvloop = importlib.util.find_spec("uvloop") is not None
anyio.run(main, backend_options={"use_uvloop": uvloop})
"""


async def run(
    base_url: str, keys: int, calls: int, concurrency: int, backend: Literal["httpx", "aiohttp"]
) -> dict[str, float]:
    secrets = [f"{n:032x}" for n in range(keys)]
    tracemalloc.start()  # only while the client is built: tracing slows everything
    before = tracemalloc.get_traced_memory()[0]
    client = AsyncWishub(
        app_keys=secrets, base_url=base_url, max_concurrency=concurrency, backend=backend
    )
    built = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    async with client as wh:

        async def five(view: AsyncWishub) -> list[ModelList]:
            return [await view.models.list() for _ in range(calls)]

        await wh.fan_out(lambda view: view.models.list())  # warm the pool
        started = time.perf_counter()
        outcomes = await wh.fan_out(five)
        wall = time.perf_counter() - started
        failed = len(outcomes.failed)
    return {"wall_s": wall, "failed": failed, "bytes_per_key": (built - before) / keys}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backend", default="httpx", choices=["httpx", "aiohttp"])
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        base_url = server.stdout.readline().strip() if server.stdout else ""
        result = anyio.run(
            run,
            base_url,
            args.keys,
            args.calls,
            args.concurrency,
            args.backend,
            backend_options={"use_uvloop": args.uvloop},
        )
    finally:
        server.terminate()
        server.wait()
    total = args.keys * args.calls
    ideal = total * args.latency / args.concurrency
    report = {
        "keys": args.keys,
        "calls_per_key": args.calls,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "backend": args.backend,
        "ideal_s": ideal,
        **result,
        "ratio_to_ideal": result["wall_s"] / ideal,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
