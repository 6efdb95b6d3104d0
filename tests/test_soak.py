"""Load and soak: many calls over 100 keys with ~10% transient faults; nothing lost.

- 20,000 calls in-process (the fake as the httpx transport: the SDK's whole pipeline,
  no sockets), memory traced with tracemalloc over the last batches;
- 1,000 calls over real HTTP on loopback (``WISHUB_SOAK_HTTP_CALLS=20000`` for the
  full run), file descriptors and connections counted.

Every call must succeed with the models of the key that served it, or fail with the
typed error the error table prescribes after its retries; nothing else. The figures are
printed (``pytest tests/test_soak.py -s``) and recorded in ``docs/reliability.md``.
"""

from __future__ import annotations

import gc
import os
import random
import secrets
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from conftest import assert_nothing_held, over_http, until

from wishub_async import AsyncWishub, Outcome, RetryPolicy
from wishub_async._errors import DEFAULT_ERROR_TABLE
from wishub_async.exceptions import APIConnectionError, APIError
from wishub_async.models import ModelList
from wishub_async.testing import Failure, FakeWishub

KEYS = [secrets.token_hex(16) for _ in range(100)]
FAULT_RATE = 0.1
HTTP_CALLS = int(os.environ.get("WISHUB_SOAK_HTTP_CALLS", "1000"))
"""Calls in the loopback soak: 1,000 in CI; set 20000 for the full run (30-40 s a loop)."""
FAULTS = (
    Failure(type="INVOKE_MODEL_ERROR"),
    Failure(type="INVOKE_MODEL_ERROR", shape="flat"),
    Failure(shape="html", status=502),
    Failure(shape="empty", status=503),
    Failure(type="rate_limit_exceeded", retry_after="0.05"),
    Failure(shape="drop"),
    Failure(shape="reset"),
    Failure(shape="drop_mid_body"),
    Failure(shape="reset_after_headers"),
)
"""The transient faults: server errors, gateway pages, rate limits, broken connections."""


class ChaoticWishub(FakeWishub):
    """A fake where each request fails, with probability ``FAULT_RATE``, with a random fault.

    Key ``N`` sees the single model ``m-N``, so a reply proves which key it served.
    """

    def __init__(self, *, seed: int) -> None:
        super().__init__({key: [f"m-{index}"] for index, key in enumerate(KEYS)})
        self.random = random.Random(seed)  # noqa: S311 - a seeded fault schedule, not crypto
        self.faults = 0
        self.served = 0

    def _next_failure(self, key: str | None) -> Failure | None:
        self.served += 1
        if self.random.random() < FAULT_RATE:
            self.faults += 1
            return self.random.choice(FAULTS)
        return super()._next_failure(key)


@attrs.define
class Tally:
    """What a soak run did, for the assertions and the printed figures."""

    calls: int = 0
    ok: int = 0
    failed: Counter[str] = attrs.field(factory=Counter)
    unexpected: list[BaseException] = attrs.field(factory=list)
    traced: list[int] = attrs.field(factory=list)
    started: float = attrs.field(factory=time.perf_counter)

    def add(self, outcome: Outcome[ModelList], label_models: dict[str, list[str]]) -> None:
        self.calls += 1
        error = outcome.error
        if error is None:
            assert outcome.value is not None
            assert outcome.label is not None
            assert outcome.value.ids == label_models[outcome.label]  # the key that served it
            self.ok += 1
        elif is_prescribed(error) and outcome.attempts >= RetryPolicy().attempts:
            self.failed[type(error).__name__] += 1
        else:
            self.unexpected.append(error)

    def figures(self, fake: ChaoticWishub, **extra: Any) -> str:
        failed = ", ".join(f"{name} {count}" for name, count in sorted(self.failed.items()))
        growth = self.traced[-1] - self.traced[0] if self.traced else None
        shown = {
            "calls": self.calls,
            "ok": self.ok,
            "failed": failed or "none",
            "unexpected": len(self.unexpected),
            "requests served": fake.served,
            "faults injected": fake.faults,
            "traced growth (bytes)": growth,
            **extra,
            "seconds": round(time.perf_counter() - self.started, 1),
        }
        return "; ".join(f"{name}: {value}" for name, value in shown.items())


def is_prescribed(error: Exception) -> bool:
    """Whether ``error`` is what the error table prescribes for a transient fault."""
    if isinstance(error, APIError):
        rule = DEFAULT_ERROR_TABLE.rule_for(error.type, error.status_code)
        return type(error) is rule.exception and rule.retry
    return type(error) is APIConnectionError and isinstance(error.__cause__, httpx.HTTPError)


async def list_models(view: AsyncWishub, _: int) -> ModelList:
    return await view.models.list()


async def soak(
    wh: AsyncWishub, fake: ChaoticWishub, *, calls: int, batch: int, traced_batches: int
) -> Tally:
    """Run ``calls`` calls through ``wh.map`` in batches; trace memory over the last ones."""
    label_models = {label: [f"m-{index}"] for index, label in enumerate(wh.key_labels)}
    tally = Tally()
    batches = calls // batch
    already_tracing = tracemalloc.is_tracing()
    try:
        for number in range(batches):
            if number == batches - traced_batches and not already_tracing:
                tracemalloc.start()
            for outcome in await wh.map(list_models, range(batch)):
                tally.add(outcome, label_models)
            fake.requests.clear()  # the fake's log, not the SDK, would grow otherwise
            if tracemalloc.is_tracing() and number >= batches - traced_batches:
                gc.collect()
                tally.traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        if not already_tracing:
            tracemalloc.stop()
    return tally


def check(tally: Tally, fake: ChaoticWishub, wh: AsyncWishub) -> None:
    assert not tally.unexpected, tally.unexpected[:5]
    assert tally.ok + sum(tally.failed.values()) == tally.calls  # every call accounted for
    assert fake.faults > fake.served * FAULT_RATE * 0.8  # the faults really happened
    assert fake.served - fake.faults == tally.ok  # each good reply became exactly one result
    assert sum(status.successes for status in wh.key_status()) == tally.ok
    assert all(status.state != "quarantined" for status in wh.key_status())
    assert_nothing_held(wh)


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


@pytest.mark.anyio
async def test_soak_in_process(anyio_backend: str) -> None:
    """20,000 calls over 100 keys, in-process; memory flat over the last 2,000."""
    fake = ChaoticWishub(seed=20_000)
    fds = open_fds()
    async with fake.client(app_keys=KEYS) as wh:
        tally = await soak(wh, fake, calls=20_000, batch=1_000, traced_batches=2)
        check(tally, fake, wh)
    growth = tally.traced[-1] - tally.traced[0]  # over the last 1,000 calls
    print(f"\nsoak in-process on {anyio_backend}: {tally.figures(fake)}")  # noqa: T201 - the figures
    assert growth < 100_000  # < 100 bytes a call: no per-call leak
    assert open_fds() == fds


@pytest.mark.anyio
async def test_soak_over_loopback_http(anyio_backend: str) -> None:
    """``HTTP_CALLS`` calls over 100 keys on real sockets; no fd or connection outlives it."""
    fake = ChaoticWishub(seed=HTTP_CALLS)
    gc.collect()
    fds = open_fds()
    async with over_http(fake, app_keys=KEYS, max_concurrency=50) as wh:
        tally = await soak(wh, fake, calls=HTTP_CALLS, batch=250, traced_batches=0)
        check(tally, fake, wh)
        kept = fake.open_connections
        assert kept <= 50
    await until(lambda: fake.open_connections == 0)
    gc.collect()
    fds_after = open_fds()
    print(  # noqa: T201 - the figures
        f"\nsoak over loopback on {anyio_backend}: "
        + tally.figures(fake, **{"connections kept": kept, "fds": f"{fds} -> {fds_after}"})
    )
    assert fds_after == fds
