"""The same behaviour on both transports, over real loopback HTTP.

Each test runs three times (the ``transport`` fixture): httpx on asyncio, httpx
on trio, aiohttp on asyncio (aiohttp is asyncio-only). Retries, errors, streaming,
limits, key handling and cancellation must not depend on the transport.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import pytest
from conftest import K1, K2, WRONG

from wishub_async import AsyncWishub, KeyState, RetryPolicy
from wishub_async.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ServerError,
)
from wishub_async.models import ModelList
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

ASK = [{"role": "user", "content": "hi"}]
Transport = Literal["httpx", "aiohttp"]


@asynccontextmanager
async def serve(
    fake: FakeWishub, transport: Transport, **options: Any
) -> AsyncIterator[AsyncWishub]:
    async with (
        fake.serve() as base_url,
        AsyncWishub(base_url=base_url, backend=transport, **options) as wh,
    ):
        yield wh


async def list_models(wh: AsyncWishub) -> ModelList:
    return await wh.models.list()


@pytest.mark.anyio
async def test_models_and_a_wrong_key(transport: Transport) -> None:
    fake = FakeWishub([K1])
    async with serve(fake, transport, app_keys={"good": K1, "bad": WRONG}) as wh:
        outcomes = await wh.fan_out(list_models)
        states = [status.state for status in wh.key_status()]
    assert outcomes[0].unwrap().ids == list(DEFAULT_MODELS)
    assert isinstance(outcomes[1].error, AuthenticationError)
    assert outcomes[1].error.code == 500004
    assert states == [KeyState.HEALTHY, KeyState.QUARANTINED]
    assert fake.count(WRONG) == 1


@pytest.mark.anyio
async def test_server_errors_are_retried_then_succeed(transport: Transport) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="INVOKE_MODEL_ERROR", times=2)
    async with serve(fake, transport, app_key=K1) as wh:
        assert len(await wh.models.list()) == len(DEFAULT_MODELS)
    assert fake.count(K1) == 3


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ("flat", ServerError),
        ("html", ServerError),
        ("empty", ServerError),
        ("drop", APIConnectionError),
        ("drop_mid_body", APIConnectionError),
    ],
)
@pytest.mark.anyio
async def test_every_failure_shape_gives_the_same_typed_error(
    transport: Transport, shape: str, error: type[Exception]
) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, shape=shape, status=502, times=3)
    async with serve(fake, transport, app_key=K1) as wh:
        with pytest.raises(error):
            await wh.models.list()
        assert len(await wh.models.list()) == len(DEFAULT_MODELS)  # still usable
    assert fake.count(K1) == 4


@pytest.mark.anyio
async def test_retry_after_is_honoured(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeWishub([K1])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="4", times=1)
    async with serve(fake, transport, app_key=K1) as wh:
        await wh.models.list()
    assert "retrying in 4.00s" in caplog.text
    assert K1 not in caplog.text


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_slow_answer_is_a_timeout(transport: Transport) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, latency=3, times=1)
    async with serve(fake, transport, app_key=K1, timeout=0.2, retry=RetryPolicy(attempts=1)) as wh:
        with pytest.raises(APITimeoutError):
            await wh.models.list()
        assert len(await wh.models.list()) == len(DEFAULT_MODELS)


@pytest.mark.anyio
async def test_streaming_chat_and_an_in_stream_error(transport: Transport) -> None:
    fake = FakeWishub([K1])
    async with serve(fake, transport, app_key=K1) as wh:
        model = (await wh.models.list()).ids[0]
        stream = await wh.chat.completions.create(model=model, messages=ASK, stream=True)
        async with stream:
            text = "".join([chunk.text async for chunk in stream])
        assert text == "You said: hi"
        fake.chat.fail_stream(after=2, type="INVOKE_MODEL_ERROR")
        stream = await wh.chat.completions.create(model=model, messages=ASK, stream=True)
        with pytest.raises(ServerError) as caught:
            await stream.collect()
        assert caught.value.status_code == 200
        stream = await wh.chat.completions.create(model=model, messages=ASK, stream=True)
        async with stream:
            async for _ in stream:
                break
        assert stream.closed
        assert wh.key_status()[0].in_flight == 0


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_limits_hold_at_the_server(transport: Transport) -> None:
    fake = FakeWishub([K1, K2], latency=0.01)
    async with serve(
        fake, transport, app_keys=[K1, K2], max_concurrency=4, per_key_concurrency=2
    ) as wh:
        outcomes = await wh.map(lambda view, _: view.models.list(), range(40))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.peak_in_flight_total <= 4
    assert max(fake.peak_in_flight[K1], fake.peak_in_flight[K2]) <= 2


@pytest.mark.anyio
async def test_cancellation_leaves_the_client_usable(transport: Transport) -> None:
    fake = FakeWishub([K1, K2])
    async with serve(fake, transport, app_keys=[K1, K2]) as wh:
        fake.latency = 30
        with anyio.move_on_after(0.2) as scope:
            await wh.fan_out(list_models)
        assert scope.cancelled_caught
        assert all(status.in_flight == 0 for status in wh.key_status())
        fake.latency = 0
        again = await wh.fan_out(list_models)
    assert all(outcome.ok for outcome in again)
