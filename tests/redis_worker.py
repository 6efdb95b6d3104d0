"""One worker process of the multi-process tests (and the benchmark): a fan-out.

    python tests/redis_worker.py '{"base_url": ..., "keys": [...], ...}'

It builds an ``AsyncWishub`` over ``keys`` against ``base_url`` (a loopback fake),
sharing its state on Redis when ``redis_url`` is given, then embeds ``calls`` texts
over all keys (or, with ``stop_file``, keeps doing so until that file exists),
starting at the wall-clock time ``start_at`` if given (so that several workers start
together). It prints one JSON line: the calls that succeeded, the failures by
exception name, the ``SharedStateWarning``s it saw, whether it was sharing at the
end, and the seconds its calls took (``wall``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from wishub_async import AsyncWishub, RateLimit, RetryPolicy
from wishub_async.redis import RedisState, SharedStateWarning
from wishub_async.testing import DEFAULT_MODELS

MODEL = DEFAULT_MODELS[0]


async def embed(view: AsyncWishub, text: str) -> int:
    return len(await view.embeddings.create(model=MODEL, input=text))


async def work(job: dict[str, Any]) -> dict[str, Any]:
    state = None
    if job.get("redis_url"):
        state = RedisState.from_url(
            job["redis_url"],
            namespace=job.get("namespace", "tests"),
            timeout=job.get("timeout", 2.0),  # generous: a loaded test machine is slow
        )
    limit = job.get("limit")
    options: dict[str, Any] = {
        "app_keys": job["keys"],
        "base_url": job["base_url"],
        "limits": None if limit is None else RateLimit(**limit),
        "max_concurrency": job.get("concurrency", 8),
        "retry": RetryPolicy(attempts=job.get("attempts", 3), max_retry_after=30.0),
        "state": state,
    }
    done, failed = 0, Counter[str]()
    stop = Path(job["stop_file"]) if job.get("stop_file") else None
    parent = os.getppid()
    async with AsyncWishub(**options) as wh:
        await asyncio.sleep(max(job.get("start_at", 0.0) - time.time(), 0.0))
        started = time.perf_counter()
        rounds = 0
        while True:
            texts = [f"text {rounds}-{n}" for n in range(job["calls"])]
            outcomes = await wh.map(embed, texts)
            done += sum(1 for outcome in outcomes if outcome.ok)
            failed.update(type(o.error).__name__ for o in outcomes if o.error is not None)
            rounds += 1
            if stop is None or stop.exists() or os.getppid() != parent:
                break  # done, told to stop, or the test that started it is gone
        wall = time.perf_counter() - started
        sharing = state.sharing if state is not None else False
    return {"done": done, "failed": dict(failed), "sharing": sharing, "wall": wall}


def main() -> None:
    job = json.loads(sys.argv[1])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", SharedStateWarning)
        result = asyncio.run(work(job))
    result["warnings"] = sum(1 for w in seen if issubclass(w.category, SharedStateWarning))
    print(json.dumps(result), flush=True)  # noqa: T201 - the worker's one line of output


if __name__ == "__main__":
    main()
