"""The four clients of the rate-budget benchmark; one fan-out per process.

Every client makes the same ``--calls`` embeddings calls for one model over the same
``--keys`` keys, with at most ``--concurrency`` calls in flight, against
``limit_server.py``. Prints one JSON line: calls that succeeded and failed (by error
type), the wall time from the first call to the last answer and, for this SDK, a
trace of its adaptive rates (``key_status()``) over time.

- ``wishub-limits``: this SDK told the server's limit, ``limits=RateLimit(...)``.
- ``wishub-adaptive``: this SDK with no limit configured: it adapts.
- ``openai``: the official OpenAI SDK, one ``AsyncOpenAI`` per key with its default
  retries (2, honouring Retry-After), calls spread round-robin over the keys.
- ``pause-all``: a processor in the style of the OpenAI cookbook's
  ``api_request_parallel_processor.py``: it paces calls with a token bucket at the
  rate it is told (here the aggregate limit, a window's worth of burst), spreads them
  round-robin over the keys, and after any 429 holds every new call back for a fixed
  pause (15 s against a per-minute limit there; ``--pause`` here), retrying a
  rate-limited call up to 5 attempts in all.

    python benchmarks/budget_clients.py wishub-limits --url http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter, deque
from http import HTTPStatus
from typing import Any

__all__ = ["CLIENTS", "MODEL", "bench_keys", "main"]

MODEL = "BGE-m3"
CLIENTS = ("wishub-limits", "wishub-adaptive", "openai", "pause-all")
_ATTEMPTS = 5  # the cookbook script's max_attempts
_TICK = 0.001  # the cookbook script's seconds_to_sleep_each_loop


def bench_keys(count: int) -> list[str]:
    """``count`` fake keys of 32 hex characters."""
    return [f"b0d9e7{index:026x}" for index in range(count)]


def _text(index: int) -> str:
    return f"benchmark sentence number {index}"


async def _sample_rates(wh: Any, trace: list[dict[str, float]], every: float) -> None:
    """Every ``every`` s, note the keys' adaptive rates and the calls waiting for budget."""
    started = time.perf_counter()
    while True:
        rates, waiting, flying = [], 0, 0
        for status in wh.key_status():
            budget = status.budgets.get(MODEL)
            if budget is None:
                continue
            if budget.adaptive_rate is not None:
                rates.append(budget.adaptive_rate)
            waiting += budget.waiting
            flying += budget.requests_used
        if rates:
            trace.append(
                {
                    "t": round(time.perf_counter() - started, 3),
                    "sum": round(sum(rates), 2),
                    "min": round(min(rates), 2),
                    "median": round(statistics.median(rates), 2),
                    "max": round(max(rates), 2),
                    "waiting": waiting,
                    "in_flight": flying,
                }
            )
        await asyncio.sleep(every)


async def wishub(args: argparse.Namespace, *, configured: bool) -> dict[str, Any]:
    """This SDK, with the server's limit configured or adapting to it."""
    from wishub_async import AsyncWishub, RateLimit  # noqa: PLC0415 - measured imports only

    limits = RateLimit(requests=args.requests, per=args.per) if configured else None
    trace: list[dict[str, float]] = []
    async with AsyncWishub(
        app_keys=bench_keys(args.keys),
        base_url=args.url,
        backend=args.backend,
        max_concurrency=args.concurrency,
        limits=limits,
    ) as wh:

        async def embed(view: AsyncWishub, index: int) -> object:
            return await view.embeddings.create(model=MODEL, input=_text(index))

        sampler = asyncio.create_task(_sample_rates(wh, trace, args.sample))
        started = time.perf_counter()
        outcomes = await wh.map(embed, range(args.calls))
        wall = time.perf_counter() - started
        sampler.cancel()
    errors = Counter(type(outcome.error).__name__ for outcome in outcomes.failed)
    return {
        "ok": len(outcomes) - len(outcomes.failed),
        "errors": dict(errors),
        "attempts": sum(outcome.attempts for outcome in outcomes),
        "wall_s": wall,
        "rate_trace": trace if not configured else [],
    }


async def openai_sdk(args: argparse.Namespace) -> dict[str, Any]:
    """The OpenAI SDK with its default retries; one client per key, round-robin."""
    import openai  # noqa: PLC0415 - measured imports only

    clients = [openai.AsyncOpenAI(api_key=key, base_url=args.url) for key in bench_keys(args.keys)]
    gate = asyncio.Semaphore(args.concurrency)

    async def embed(index: int) -> str | None:
        async with gate:
            try:
                await clients[index % len(clients)].embeddings.create(
                    model=MODEL, input=_text(index), encoding_format="float"
                )
            except openai.OpenAIError as error:
                return type(error).__name__
            return None

    started = time.perf_counter()
    results = await asyncio.gather(*(embed(index) for index in range(args.calls)))
    wall = time.perf_counter() - started
    for client in clients:
        await client.close()
    errors = Counter(result for result in results if result is not None)
    return {"ok": results.count(None), "errors": dict(errors), "wall_s": wall}


class PauseAll:
    """The cookbook processor's loop, for embeddings over many keys (see the docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.keys = bench_keys(args.keys)
        self.rate = args.keys * args.requests / args.per  # told the aggregate limit
        self.capacity = self.ceiling = args.keys * args.requests  # a window's worth
        self.pending: deque[tuple[int, int]] = deque((i, _ATTEMPTS) for i in range(args.calls))
        self.retries: deque[tuple[int, int]] = deque()
        self.in_flight = 0
        self.next_key = 0
        self.last_limited = -float("inf")
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.attempts = 0

    async def run(self) -> dict[str, Any]:
        """Dispatch every call, pacing and pausing; wait for the last answer."""
        import aiohttp  # noqa: PLC0415 - measured imports only

        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as session:
            started = stamp = time.perf_counter()
            while self.pending or self.retries or self.in_flight:
                now = time.perf_counter()
                self.capacity = min(self.ceiling, self.capacity + (now - stamp) * self.rate)
                stamp = now
                queue = self.retries or self.pending
                if queue and self.capacity >= 1 and self.in_flight < self.args.concurrency:
                    self.capacity -= 1
                    self.in_flight += 1
                    task = asyncio.create_task(self.call(session, *queue.popleft()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(_TICK)  # as the script does, after every step
                paused = self.args.pause - (time.perf_counter() - self.last_limited)
                if paused > 0:
                    await asyncio.sleep(paused)
            wall = time.perf_counter() - started
        return {
            "ok": self.ok,
            "errors": dict(self.errors),
            "attempts": self.attempts,
            "wall_s": wall,
        }

    async def call(self, session: Any, index: int, attempts_left: int) -> None:
        """One attempt on the next key in turn; a 429 pauses everyone and requeues it."""
        key = self.keys[self.next_key]
        self.next_key = (self.next_key + 1) % len(self.keys)
        self.attempts += 1
        try:
            async with session.post(
                self.args.url + "/embeddings",
                json={"model": MODEL, "input": _text(index)},
                headers={"Authorization": f"Bearer {key}"},
            ) as reply:
                await reply.read()
                status = reply.status
        finally:
            self.in_flight -= 1
        if status == HTTPStatus.OK:
            self.ok += 1
        elif status == HTTPStatus.TOO_MANY_REQUESTS and attempts_left > 1:
            self.last_limited = time.perf_counter()
            self.retries.append((index, attempts_left - 1))
        else:
            self.errors[f"HTTP {status}"] += 1


def main(argv: list[str] | None = None) -> None:
    """Run one client's fan-out and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--per", type=float, default=2.0)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.5, help="pause-all: seconds after a 429")
    parser.add_argument("--backend", default="aiohttp", choices=["httpx", "aiohttp"])
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.client == "wishub-limits":
        result = asyncio.run(wishub(args, configured=True))
    elif args.client == "wishub-adaptive":
        result = asyncio.run(wishub(args, configured=False))
    elif args.client == "openai":
        result = asyncio.run(openai_sdk(args))
    else:
        result = asyncio.run(PauseAll(args).run())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
