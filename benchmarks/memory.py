"""Memory of a fan-out over many keys, measured with tracemalloc; one pool for all.

Builds ``AsyncWishub(app_keys=[...10,000 fake keys...])``, runs
``fan_out(lambda c: c.models.list())`` against the loopback server, and reports bytes
per key: for the client itself, at the fan-out's peak, and for the results kept. The
server's connection count shows that every key shared one pool. Prints one JSON line::

    python benchmarks/memory.py --url http://127.0.0.1:PORT/v1 --backend aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
import urllib.request
from typing import Literal

from wishub_async import AsyncWishub

__all__ = ["main", "measure"]


def _server_stats(base_url: str) -> dict[str, int]:
    root = base_url.rsplit("/v1", 1)[0]
    if not root.startswith("http://127.0.0.1:"):
        raise ValueError("the memory check talks to the loopback benchmark server only")
    with urllib.request.urlopen(root + "/stats", timeout=10) as reply:  # noqa: S310 - loopback
        stats: dict[str, int] = json.loads(reply.read())
        return stats


async def measure(
    base_url: str, backend: Literal["httpx", "aiohttp"], keys: int, max_concurrency: int
) -> dict[str, float | int | str]:
    """Bytes per key for a fan-out of ``models.list()`` over ``keys`` keys."""
    secrets = [f"fakememory{index:022x}" for index in range(keys)]
    before = await asyncio.to_thread(_server_stats, base_url)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    wh = AsyncWishub(
        app_keys=secrets, base_url=base_url, backend=backend, max_concurrency=max_concurrency
    )
    client_bytes = tracemalloc.get_traced_memory()[0] - base
    async with wh:
        tracemalloc.reset_peak()
        started = time.perf_counter()
        outcomes = await wh.fan_out(lambda view: view.models.list())
        elapsed = time.perf_counter() - started
        peak_bytes = tracemalloc.get_traced_memory()[1] - base
        gc.collect()
        with_results = tracemalloc.get_traced_memory()[0] - base
        ok = sum(outcome.ok for outcome in outcomes)
        del outcomes
        gc.collect()
        results_bytes = with_results - (tracemalloc.get_traced_memory()[0] - base)
    tracemalloc.stop()
    after = await asyncio.to_thread(_server_stats, base_url)
    return {
        "backend": backend,
        "keys": keys,
        "max_concurrency": max_concurrency,
        "ok": ok,
        "seconds": round(elapsed, 2),
        "connections_opened": after["connections"] - before["connections"] - 1,
        "client_bytes_per_key": round(client_bytes / keys),
        "peak_bytes_per_key": round(peak_bytes / keys),
        "results_bytes_per_key": round(results_bytes / keys),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the loopback server's base URL")
    parser.add_argument("--backend", choices=["httpx", "aiohttp"], default="aiohttp")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--max-concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.url, args.backend, args.keys, args.max_concurrency))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
