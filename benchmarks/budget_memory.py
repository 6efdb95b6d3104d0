"""The memory of rate budgets for many keys and models, measured with tracemalloc.

``states`` (the figure): drives the budget states directly, as the request path
makes them, for 10,000 keys x 5 models: one dict of budgets per key
(``AppKey.budgets``), a state per model made on first use and settled by one call:
a ``Window`` (a configured ``RateLimit``) or an ``AdaptiveRate`` (no limit). Then
each ``Window`` counts ``--calls`` more calls: a window keeps each call until ``per``
seconds after its answer, the part of a budget that grows with its traffic.

``path`` (the cross-check): builds ``FakeWishub().client(app_keys=[...],
limits=...)`` in-process and makes one embeddings call per key and model through the
request path. Run once per ``--variant``: ``window`` (``RateLimit(requests=1800)``),
``adaptive`` (no limit) and ``none`` (``RateLimit()``: no budget at all, the
control); a budget costs a variant's memory after the calls less the control's, over
keys x models. Tracing makes each call some 2.5 ms, hence fewer keys by default.

Prints one JSON line::

    python benchmarks/budget_memory.py states --keys 10000 --models 5
    python benchmarks/budget_memory.py path --variant window --keys 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from typing import Any

from wishub_async import AsyncWishub, RateLimit
from wishub_async.testing import FakeWishub

__all__ = ["main", "measure_path", "measure_states"]

_LIMITS: dict[str, RateLimit | None] = {
    "window": RateLimit(requests=1800, per=60.0),
    "adaptive": None,
    "none": RateLimit(),
}


def _models(count: int) -> list[str]:
    return [f"bench-model-{index}" for index in range(count)]


async def measure_path(variant: str, keys: int, models: int) -> dict[str, Any]:
    """Memory after one budgeted call per key and model, through the request path."""
    names = _models(models)
    fake = FakeWishub(models=names)
    secrets = [f"ae{index:030x}" for index in range(keys)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    wh = fake.client(app_keys=secrets, limits=_LIMITS[variant])
    client_bytes = tracemalloc.get_traced_memory()[0] - base
    started = time.perf_counter()
    async with wh:

        async def each_model(view: AsyncWishub) -> int:
            for name in names:
                await view.embeddings.create(model=name, input="x")
            return len(names)

        outcomes = await wh.fan_out(each_model)
        failed = len(outcomes.failed)
        del outcomes
        gc.collect()
        after_bytes = tracemalloc.get_traced_memory()[0] - base
        budgets = sum(len(status.budgets) for status in wh.key_status())
    tracemalloc.stop()
    return {
        "variant": variant,
        "keys": keys,
        "models": models,
        "budgets": budgets,
        "failed": failed,
        "client_bytes": client_bytes,
        "after_calls_bytes": after_bytes,
        "seconds": time.perf_counter() - started,
    }


def measure_states(keys: int, models: int, calls: int) -> dict[str, Any]:
    """Bytes per budget for ``keys`` x ``models``, driving the budget states directly.

    Each key's budgets live in a dict (``AppKey.budgets``), one state per model, as
    the request path makes them: a ``Window`` or an ``AdaptiveRate``, made on first
    use and settled by one call. Then each ``Window`` counts ``calls`` more calls, for
    the bytes per call a window still counts.
    """
    from wishub_async._budget import (  # noqa: PLC0415 - the states themselves
        AdaptiveRate,
        Answer,
        Budget,
        Window,
    )

    limit = RateLimit(requests=1800, per=60.0)
    names = _models(models)
    result: dict[str, Any] = {"keys": keys, "models": models}
    for kind in ("window", "adaptive"):
        books: list[dict[str, Budget]] = [{} for _ in range(keys)]  # AppKey.budgets
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for book in books:
            for name in names:
                state = book[name] = Window(limit) if kind == "window" else AdaptiveRate()
                state.take(0.0, 0)
                state.finish(0.05, 0, None, Answer.OK, 0.0)
        one_call = tracemalloc.get_traced_memory()[0] - base
        result[f"{kind}_bytes_per_budget"] = one_call / (keys * models)
        if kind == "window":
            for book in books:
                for state in book.values():
                    for index in range(calls):
                        state.take(float(index), 0)
                        state.finish(float(index) + 0.05, 0, None, Answer.OK, float(index))
            more = tracemalloc.get_traced_memory()[0] - base - one_call
            result["window_bytes_per_counted_call"] = more / (keys * models * calls)
        tracemalloc.stop()
        del books
    return result


def main(argv: list[str] | None = None) -> None:
    """Measure one thing and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("what", choices=["states", "path"])
    parser.add_argument("--variant", choices=sorted(_LIMITS), default="window")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="states: more calls per window")
    args = parser.parse_args(argv)
    if args.what == "path":
        result = asyncio.run(measure_path(args.variant, args.keys, args.models))
    else:
        result = measure_states(args.keys, args.models, args.calls)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
