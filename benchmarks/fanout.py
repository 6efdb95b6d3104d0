"""Fan-out benchmark: 200 keys x 5 calls at concurrency 100, against the ideal time.

The server (``server.py --latency S``) answers every call after ``S`` seconds, so the
ideal wall time is calls x latency / concurrency; a client that reaches it is never
the bottleneck. wishub_async runs ``fan_out`` over 200 keys with
``max_concurrency=100``; the raw peers (``clients.py``'s jobs, one key) run the same
1,000 calls, 100 at a time. Prints one JSON line::

    python benchmarks/fanout.py wishub-httpx --url http://127.0.0.1:PORT/v1 --latency 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Literal

from clients import CLIENTS

from wishub_async import AsyncWishub
from wishub_async.models import ModelList

__all__ = ["main"]


async def wishub(
    base_url: str, keys: int, calls: int, concurrency: int, backend: Literal["httpx", "aiohttp"]
) -> tuple[float, int]:
    """Wall time and failures of ``fan_out`` over ``keys`` keys, ``calls`` calls each."""
    secrets = [f"{n:032x}" for n in range(keys)]
    async with AsyncWishub(
        app_keys=secrets, base_url=base_url, max_concurrency=concurrency, backend=backend
    ) as wh:

        async def each(view: AsyncWishub) -> list[ModelList]:
            return [await view.models.list() for _ in range(calls)]

        await wh.fan_out(lambda view: view.models.list())  # opens the connections
        started = time.perf_counter()
        outcomes = await wh.fan_out(each)
        return time.perf_counter() - started, len(outcomes.failed)


async def raw(client: str, base_url: str, total: int, concurrency: int) -> tuple[float, int]:
    """Wall time of ``total`` calls of a peer's job, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    async with CLIENTS[client](base_url, concurrency) as job:

        async def one() -> None:
            async with gate:
                await job()

        await asyncio.gather(*(one() for _ in range(concurrency)))  # opens the connections
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - started, 0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "client", choices=["wishub-httpx", "wishub-aiohttp", "raw-httpx", "raw-aiohttp"]
    )
    parser.add_argument("--url", required=True, help="a server.py --latency S base URL")
    parser.add_argument("--latency", type=float, required=True, help="the server's S")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    total = args.keys * args.calls
    if args.client.startswith("wishub-"):
        backend: Literal["httpx", "aiohttp"] = (
            "aiohttp" if args.client == "wishub-aiohttp" else "httpx"
        )
        run = wishub(args.url, args.keys, args.calls, args.concurrency, backend)
    else:
        run = raw(args.client, args.url, total, args.concurrency)
    wall, failed = asyncio.run(run)
    ideal = total * args.latency / args.concurrency
    report = {
        "client": args.client,
        "calls": total,
        "keys": args.keys if args.client.startswith("wishub-") else 1,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "ideal_s": ideal,
        "wall_s": wall,
        "failed": failed,
        "ratio_to_ideal": wall / ideal,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
