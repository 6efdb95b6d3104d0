"""The budget step's cost in CPU instructions per call, counted by valgrind.

Throughput on a shared 2-core machine moves by more than the step costs, so this
counts instructions instead (deterministic): ``embeddings.create`` on the aiohttp
transport, 50 calls at a time, with no budget, a limit of requests, and a limit of
requests and tokens, none of which binds. Each mode runs under
``valgrind --tool=callgrind`` twice (200 and 2,200 calls, with one hash seed); the
difference over 2,000 is the instructions a call. Needs valgrind
(``apt install valgrind``) and a server:

    python benchmarks/server.py --port 8777 &
    python benchmarks/budget_step_count.py --url http://127.0.0.1:8777/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys

__all__ = ["main"]

MODES = ("none", "requests", "limits")
_CALLS = (200, 2200)
_COLLECTED = re.compile(r"Collected : (\d+)")


async def _calls(url: str, mode: str, calls: int) -> None:
    from wishub_async import AsyncWishub, RateLimit  # noqa: PLC0415 - only in the counted run

    limits = {
        "none": RateLimit(),
        "requests": RateLimit(requests=10**9, per=60),
        "limits": RateLimit(requests=10**9, tokens=10**12, per=60),
    }[mode]
    key = "fakebench0000000000000000000000a"
    async with AsyncWishub(app_key=key, base_url=url, backend="aiohttp", limits=limits) as wh:
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await wh.embeddings.create(model="bge-m3", input="benchmark")

        await asyncio.gather(*(worker() for _ in range(50)))


def _instructions(url: str, mode: str, calls: int) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--url", url, "--run", mode, "--calls", str(calls)]
    seeded = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts each run
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=seeded)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-500:]}")
    return int(found[1])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the loopback server's base URL")
    parser.add_argument("--run", choices=MODES, help="(internal) run the calls of one mode")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with the counts as JSON")
    args = parser.parse_args(argv)
    if args.run:
        asyncio.run(_calls(args.url, args.run, args.calls))
        return
    per_call = {}
    for mode in MODES:
        few, many = (_instructions(args.url, mode, calls) for calls in _CALLS)
        per_call[mode] = (many - few) / (_CALLS[1] - _CALLS[0])
    extras = {mode: per_call[mode] / per_call["none"] - 1 for mode in MODES}
    for mode in MODES:
        print(f"{mode:9} {per_call[mode]:10,.0f} instructions a call ({extras[mode]:+.1%})")
    if args.json:
        print(json.dumps({"instructions": per_call, "extra": extras}))


if __name__ == "__main__":
    main(sys.argv[1:])
