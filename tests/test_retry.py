"""Retries, counted at the server; waits, Retry-After and the deadline."""

from __future__ import annotations

import math

import anyio
import pytest
from conftest import K1, WRONG

from wishub_async import AsyncWishub, RetryPolicy
from wishub_async._clock import instant_waits_enabled
from wishub_async.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    ServerError,
)
from wishub_async.testing import FakeWishub, instant_waits


@pytest.mark.anyio
async def test_two_server_errors_then_success_is_three_requests(fake: FakeWishub) -> None:
    fake.fail(K1, type="INVOKE_MODEL_ERROR", times=2)
    async with fake.client(app_key=K1) as wh:
        models = await wh.models.list()
    assert models.ids == ["m-1", "测试模型名称1"]
    assert fake.count(K1) == 3
    assert [request.status for request in fake.requests] == [500, 500, 200]


@pytest.mark.anyio
async def test_a_wrong_key_is_exactly_one_request(fake: FakeWishub) -> None:
    async with fake.client(app_key=WRONG) as wh:
        with pytest.raises(AuthenticationError) as caught:
            await wh.models.list()
    assert fake.count(WRONG) == 1
    assert caught.value.code == 500004


@pytest.mark.anyio
async def test_retries_stop_after_the_configured_attempts(fake: FakeWishub) -> None:
    fake.fail(K1, type="INVOKE_MODEL_ERROR", times=10)
    async with fake.client(app_key=K1, retry=RetryPolicy(attempts=4)) as wh:
        with pytest.raises(ServerError):
            await wh.models.list()
    assert fake.count(K1) == 4


@pytest.mark.anyio
async def test_a_bad_request_is_not_retried(fake: FakeWishub) -> None:
    fake.fail(K1, type="invalid_request_error", times=5)
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(BadRequestError):
            await wh.models.list()
    assert fake.count(K1) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["drop", "drop_mid_body", "html", "empty", "flat"])
async def test_transient_failures_of_every_shape_are_retried(fake: FakeWishub, shape: str) -> None:
    fake.fail(K1, shape=shape, status=502, times=2)
    async with fake.client(app_key=K1) as wh:
        assert len(await wh.models.list()) == 2
    assert fake.count(K1) == 3


@pytest.mark.anyio
async def test_a_connection_dropped_mid_response_over_real_http() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, shape="drop_mid_body", times=1)
    fake.fail(K1, shape="drop", times=1)
    async with fake.serve() as base_url, AsyncWishub(app_key=K1, base_url=base_url) as wh:
        assert len(await wh.models.list()) == 3
        fake.fail(K1, shape="drop_mid_body", times=3)
        with pytest.raises(APIConnectionError, match="RemoteProtocolError"):
            await wh.models.list()
        assert len(await wh.models.list()) == 3  # the client is still usable
    assert fake.count(K1) == 7


@pytest.mark.anyio
async def test_x_should_retry_overrides_the_table(fake: FakeWishub) -> None:
    fake.fail(K1, type="invalid_request_error", headers={"x-should-retry": "true"}, times=1)
    async with fake.client(app_key=K1) as wh:
        await wh.models.list()  # the 400 was retried
        fake.fail(K1, type="INVOKE_MODEL_ERROR", headers={"x-should-retry": "false"}, times=1)
        with pytest.raises(ServerError):
            await wh.models.list()  # the 500 was not
    assert fake.count(K1) == 3


@pytest.mark.anyio
async def test_retry_after_is_honoured_and_logged(
    fake: FakeWishub, debug_log: pytest.LogCaptureFixture
) -> None:
    fake.fail(K1, type="rate_limit_exceeded", retry_after="7", times=1)
    async with fake.client(app_key=K1) as wh:
        await wh.models.list()
    assert "GET /models on key …" + K1[-4:] in debug_log.text
    assert "rate_limit_exceeded; retrying in 7.00s" in debug_log.text
    assert K1 not in debug_log.text


@pytest.mark.anyio
async def test_retry_after_is_capped(fake: FakeWishub, debug_log: pytest.LogCaptureFixture) -> None:
    fake.fail(K1, type="rate_limit_exceeded", retry_after="3600", times=1)
    async with fake.client(app_key=K1, retry=RetryPolicy(max_retry_after=5)) as wh:
        await wh.models.list()
    assert "retrying in 5.00s" in debug_log.text


@pytest.mark.anyio
async def test_no_sleep_overruns_the_deadline(
    fake: FakeWishub, debug_log: pytest.LogCaptureFixture
) -> None:
    fake.fail(K1, type="rate_limit_exceeded", retry_after="30", times=1)
    async with fake.client(app_key=K1, retry=RetryPolicy(deadline=10)) as wh:
        with pytest.raises(RateLimitError) as caught:
            await wh.models.list()
    assert caught.value.retry_after == 30
    assert fake.count(K1) == 1
    assert "not waiting 30.00s past the deadline" in debug_log.text


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_the_deadline_bounds_slow_attempts() -> None:
    fake = FakeWishub([K1], latency=5)
    async with fake.client(app_key=K1, retry=RetryPolicy(deadline=0.2)) as wh:
        with pytest.raises(APITimeoutError, match=r"deadline of 0\.2s passed after 1 attempt"):
            await wh.models.list()
        fake.latency = 0
        assert len(await wh.models.list()) == 3  # usable afterwards


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_read_timeout_is_typed_and_retried_per_policy() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, latency=2, times=1)
    policy = RetryPolicy(initial_wait=0)
    async with (
        fake.serve() as base_url,
        AsyncWishub(app_key=K1, base_url=base_url, timeout=0.1, retry=policy) as wh,
    ):
        assert len(await wh.models.list()) == 3  # the timed-out attempt was retried
        fake.fail(K1, latency=2, times=1)
        no_retry = wh.with_options(retry=RetryPolicy(retry_timeouts=False))
        with pytest.raises(APITimeoutError, match="waiting for the response"):
            await no_retry.models.list()


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_real_backoff_waits_happen() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, times=1)
    policy = RetryPolicy(initial_wait=0.05, jitter=0)
    async with fake.client(app_key=K1, retry=policy) as wh:
        started = anyio.current_time()
        await wh.models.list()
        assert anyio.current_time() - started >= 0.05


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_wait=0.5, max_wait=8, jitter=0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    jittered = RetryPolicy(initial_wait=1, jitter=0.5)
    waits = {jittered.backoff(1) for _ in range(50)}
    assert all(0.5 <= wait <= 1 for wait in waits)
    assert len(waits) > 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_wait": -1},
        {"jitter": 2},
        {"deadline": -1},
        {"max_wait": math.nan},
    ],
)
def test_policy_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - attrs validators raise ValueError
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_instant_waits_nests_and_restores() -> None:
    assert instant_waits_enabled()  # the suite's autouse fixture
    with instant_waits():
        assert instant_waits_enabled()
    assert instant_waits_enabled()


@pytest.mark.real_waits
def test_waits_are_real_by_default() -> None:
    assert not instant_waits_enabled()
