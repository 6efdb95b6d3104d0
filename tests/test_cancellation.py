"""Cancellation and shutdown over real loopback HTTP: nothing leaks, nothing hangs.

After every cancel the httpx pool holds no busy or queued connection, no key counts a
request in flight, no limiter slot is held, and the same client serves the next call.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import K1, K2, assert_nothing_held, over_http, until

from wishub_async import AsyncWishub, Outcome, RetryPolicy
from wishub_async.exceptions import ClientStateError
from wishub_async.testing import FakeWishub

K1_MODELS = ["m-1", "测试模型名称1"]
LONG = 30.0
"""A server delay no test waits out: every call that meets it is cancelled or closed."""


async def cancel_after(checkpoints: int, scope: anyio.CancelScope) -> None:
    for _ in range(checkpoints):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


async def list_models(wh: AsyncWishub) -> None:
    await wh.models.list()


@pytest.mark.anyio
@pytest.mark.parametrize("first_attempt", ["succeeds", "fails"])
async def test_a_cancel_at_every_await_point_leaks_nothing(
    fake: FakeWishub, first_attempt: str
) -> None:
    """Cancel after 0, 1, 2 ... scheduler checkpoints, until the call outruns the cancel."""
    cancelled_at = []
    async with over_http(fake) as wh:
        for checkpoints in range(2000):
            fake._scripts.clear()
            if first_attempt == "fails":
                fake.fail(K1, type="INVOKE_MODEL_ERROR")  # so the retry path is cut too
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as scope:
                    group.start_soon(cancel_after, checkpoints, scope)
                    models = await wh.models.list()
            assert_nothing_held(wh)
            if not scope.cancelled_caught:
                break
            cancelled_at.append(checkpoints)
        assert models.ids == K1_MODELS
        assert (await wh.models.list()).ids == K1_MODELS
        assert_nothing_held(wh)
    assert len(cancelled_at) >= 5  # the sweep cut the call in many places
    await until(lambda: fake.open_connections == 0)


async def wait_until(reached: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not reached():  # noqa: ASYNC110 - polls SDK state that has no event to wait on
            await anyio.sleep(0.001)


async def cancel_when(
    reached: Callable[[], bool], *calls: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Start ``calls``, wait until ``reached()``, then cancel them all."""
    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(call)
        await wait_until(reached)
        group.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("limit", ["max_concurrency", "per_key_concurrency"])
async def test_a_cancel_while_queued_for_a_limit(fake: FakeWishub, limit: str) -> None:
    fake.fail(K1, latency=LONG)  # the first call holds the only slot
    async with over_http(fake, **{limit: 1}) as wh:
        limiter = (
            wh._shared.limiter if limit == "max_concurrency" else wh._shared.ring.keys[0].limiter
        )
        assert limiter is not None
        await cancel_when(
            lambda: limiter.statistics().tasks_waiting == 1 and fake.in_flight[K1] == 1,
            lambda: list_models(wh),
            lambda: list_models(wh),
        )
        assert_nothing_held(wh)
        assert (await wh.models.list()).ids == K1_MODELS


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["error", "slow_body"], ids=["before headers", "mid-body"])
async def test_a_cancel_while_the_server_is_slow(fake: FakeWishub, shape: str) -> None:
    fake.fail(K1, shape=shape, latency=LONG)
    async with over_http(fake) as wh:
        reached = (
            (lambda: fake.in_flight[K1] == 1) if shape == "error" else (lambda: fake.count() == 1)
        )
        await cancel_when(reached, lambda: list_models(wh))
        assert_nothing_held(wh)
        assert (await wh.models.list()).ids == K1_MODELS
    await until(lambda: fake.open_connections == 0)


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_cancel_while_sleeping_before_a_retry(fake: FakeWishub) -> None:
    fake.fail(K1, type="INVOKE_MODEL_ERROR")
    policy = RetryPolicy(initial_wait=LONG, jitter=0)
    async with over_http(fake, retry=policy) as wh:
        key = wh._shared.ring.keys[0]
        await cancel_when(lambda: key.failures == 1, lambda: list_models(wh))
        assert_nothing_held(wh)
        assert (await wh.models.list()).ids == K1_MODELS
    assert fake.count(K1) == 2


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_cancel_while_waiting_for_a_cooling_key(
    fake: FakeWishub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wishub_async")

    def waiting() -> bool:
        # The wait gives its global slot back, so other keys' calls are not blocked.
        return "for cooling key" in caplog.text and wh._shared.limiter.borrowed_tokens == 0

    async with over_http(fake) as wh:
        key = wh._shared.ring.keys[0]
        key.cooling_until = time.monotonic() + LONG
        await cancel_when(waiting, lambda: list_models(wh))
        assert_nothing_held(wh)
        key.cooling_until = 0.0
        assert (await wh.models.list()).ids == K1_MODELS
    assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_cancelling_a_fan_out_stops_all_of_it() -> None:
    keys = [f"{number:032x}" for number in range(40)]
    fake = FakeWishub(keys, latency=LONG)
    async with over_http(fake, app_keys=keys) as wh:
        outcomes = []

        async def fan_out() -> None:
            outcomes.append(await wh.fan_out(list_models))

        await cancel_when(lambda: fake._in_flight_total == len(keys), fan_out)
        assert not outcomes
        assert_nothing_held(wh)
        fake.latency = 0
        assert len((await wh.fan_out(list_models)).values) == len(keys)


@pytest.mark.anyio
@pytest.mark.parametrize("attempts", [1, 3])
async def test_aclose_fails_calls_in_flight_cleanly(fake: FakeWishub, attempts: int) -> None:
    """Five calls wait at the server, five more in the client's queue; then aclose()."""
    fake.latency = LONG
    items = range(10)
    async with over_http(fake, max_concurrency=5, retry=RetryPolicy(attempts=attempts)) as wh:
        results: list[Outcome[None]] = []

        async def run_map() -> None:
            results.extend(await wh.map(lambda view, _: list_models(view), items))

        with anyio.fail_after(10), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with anyio.create_task_group() as group:
                group.start_soon(run_map)
                await wait_until(lambda: fake._in_flight_total == 5)
                await wh.aclose()
            gc.collect()
        assert_nothing_held(wh)
        await until(lambda: fake.open_connections == 0)
    assert not caught
    errors = [type(outcome.error).__name__ for outcome in results]
    assert len(errors) == len(items)
    # Calls at the server end with ClientClosedError (a ClientStateError, and an
    # APIConnectionError: no answer came), whatever retries they had left; calls
    # still queued never start.
    assert set(errors) <= {"ClientClosedError", "ClientStateError"}
    assert errors.count("ClientClosedError") >= 5
    with pytest.raises(ClientStateError, match="closed"):
        await wh.models.list()
    assert fake.count() == 0  # no reply was ever sent


@pytest.mark.anyio
async def test_one_cancelled_call_does_not_disturb_its_neighbours(fake: FakeWishub) -> None:
    fake.fail(K2, latency=LONG)
    async with over_http(fake, app_keys={"a": K1, "b": K2}) as wh:
        slow, fast = wh.with_key("b"), wh.with_key("a")
        results = []

        async def neighbour() -> None:
            for _ in range(20):
                models = await fast.models.list()
                results.append(models.ids)

        async with anyio.create_task_group() as group:
            group.start_soon(neighbour)  # 20 calls on key "a" while one on "b" is cancelled
            await cancel_when(lambda: len(results) >= 5, lambda: list_models(slow))
        assert results == [K1_MODELS] * 20
        assert_nothing_held(wh)
        assert (await slow.models.list()).ids == ["m-2"]
