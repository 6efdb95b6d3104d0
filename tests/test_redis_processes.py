"""Several worker processes sharing one Redis, against one limit-enforcing fake.

The test process serves the fake on loopback and starts the Valkey server; each
worker (``redis_worker.py``) is an ``AsyncWishub`` of its own, with a ``RedisState``
on the same URL and namespace, fanning out over the same keys. Assertions are on
what the fake counted and what the workers report, with generous bounds.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from valkey_process import ValkeyProcess

from wishub_async.testing import FakeWishub

WORKER = Path(__file__).with_name("redis_worker.py")
KEYS = [f"{n:032x}" for n in range(11, 14)]
PROCESSES = 4


@pytest.fixture
def valkey() -> Iterator[ValkeyProcess]:
    with ValkeyProcess() as server:
        yield server


def job_for(base_url: str, valkey: ValkeyProcess, **options: Any) -> dict[str, Any]:
    """A worker's job: a fan-out over KEYS with a limit, sharing state on ``valkey``."""
    return {"base_url": base_url, "redis_url": valkey.url, "keys": KEYS, **options}


Start = Callable[[dict[str, Any]], Awaitable[asyncio.subprocess.Process]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    """Starts workers; any still running when the test ends (it failed) is killed."""
    started: list[asyncio.subprocess.Process] = []

    async def start(job: dict[str, Any]) -> asyncio.subprocess.Process:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(job),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


async def result_of(worker: asyncio.subprocess.Process) -> dict[str, Any]:
    with anyio.fail_after(120):
        out, err = await worker.communicate()
    assert worker.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return result


async def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    """Poll ``condition`` (generously: worker processes start slowly)."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - the fake's counters have no event
            await anyio.sleep(0.02)


@pytest.mark.asyncio
async def test_four_processes_never_exceed_a_limit_in_total(
    valkey: ValkeyProcess, start: Start
) -> None:
    fake = FakeWishub(KEYS)
    enforced = fake.limit(requests=4, per=0.4, style="sliding")
    async with fake.serve() as base_url:
        job = job_for(base_url, valkey, calls=30, limit={"requests": 4, "per": 0.4})
        workers = [await start(job) for _ in range(PROCESSES)]
        results = [await result_of(worker) for worker in workers]
    assert [result["done"] for result in results] == [30] * PROCESSES
    assert [result["warnings"] for result in results] == [0] * PROCESSES
    assert enforced.rejected == 0
    assert enforced.accepted == 30 * PROCESSES


@pytest.mark.asyncio
async def test_a_key_revoked_in_one_process_is_dropped_by_all(
    valkey: ValkeyProcess, tmp_path: Path, start: Start
) -> None:
    fake = FakeWishub(KEYS)
    revoked = KEYS[2]

    def sent_to_revoked() -> int:
        return fake.count(revoked)

    def rejections() -> int:
        return sum(1 for r in fake.requests if r.key == revoked and r.status == 401)

    async with fake.serve() as base_url:
        job = job_for(
            base_url,
            valkey,
            calls=12,
            limit={"requests": 1000, "per": 1.0},
            concurrency=4,
            stop_file=str(tmp_path / "stop"),
        )
        workers = [await start(job) for _ in range(PROCESSES - 1)]
        await until(lambda: sent_to_revoked() >= 3 * PROCESSES)  # all are using it
        del fake.keys[revoked]  # revoked on the platform
        await until(lambda: rejections() >= 1)
        await anyio.sleep(1.0)  # the spec: every process honours it within a second
        after_a_second = sent_to_revoked()
        total = fake.count()
        latecomer = await start({**job, "stop_file": None, "calls": 30})
        late = await result_of(latecomer)
        await until(lambda: fake.count() >= total + 100)  # the others went on too
        (tmp_path / "stop").touch()
        results = [await result_of(worker) for worker in workers]
    assert sent_to_revoked() == after_a_second  # nobody sent to it any more
    assert rejections() <= 2 * 3 * 4  # about the calls in flight when it was revoked
    assert late["done"] == 30
    assert all(result["warnings"] == 0 for result in results)
    assert all(not result["failed"] for result in [*results, late])


@pytest.mark.asyncio
async def test_redis_killed_mid_run_loses_no_call_and_sharing_resumes(
    valkey: ValkeyProcess, tmp_path: Path, start: Start
) -> None:
    fake = FakeWishub(KEYS)
    async with fake.serve() as base_url:
        job = job_for(
            base_url,
            valkey,
            calls=10,
            limit={"requests": 5000, "per": 1.0},
            stop_file=str(tmp_path / "stop"),
        )
        workers = [await start(job) for _ in range(PROCESSES)]
        await until(lambda: fake.count() >= 20 * PROCESSES)
        valkey.kill()
        before = fake.count()
        await until(lambda: fake.count() >= before + 30 * PROCESSES)  # on without Redis
        valkey.start()
        raw = aioredis.Redis.from_url(valkey.url)
        try:
            with anyio.fail_after(60):
                while len(await raw.keys("wishub:*:w:*")) < len(KEYS):  # noqa: ASYNC110 - sharing again
                    await anyio.sleep(0.05)
        finally:
            await raw.aclose()
        resumed = fake.count()
        await until(lambda: fake.count() >= resumed + 20 * PROCESSES)
        await anyio.sleep(3.0)  # past every worker's backoff (2 s at most): all share again
        (tmp_path / "stop").touch()
        results = [await result_of(worker) for worker in workers]
    assert all(not result["failed"] for result in results), results
    assert sum(result["done"] for result in results) == fake.count()  # no call lost
    assert [result["warnings"] for result in results] == [1] * PROCESSES
    assert all(result["sharing"] for result in results)
