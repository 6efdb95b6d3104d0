"""Fault injection over real loopback HTTP: every fault ends typed, or in a retry.

Each case scripts the fake (``wishub_async.testing``) to misbehave on a real socket,
then checks the exception the caller sees, the requests the server counted, and that
the same client still works afterwards.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx
import pytest
from conftest import K1, K2, assert_nothing_held, closed_port, over_http

from wishub_async import AsyncWishub, RetryPolicy
from wishub_async.exceptions import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    WishubError,
)
from wishub_async.testing import FakeWishub

K1_MODELS = ["m-1", "测试模型名称1"]
READ_TIMEOUT = httpx.Timeout(10.0, read=0.2)
"""Short enough for a slow body to time out quickly; long enough for loopback."""
HTML = {"content-type": "text/html; charset=utf-8"}
HUGE_HTML = b"<html><body>" + b"<p>upstream exploded</p>" * 200_000 + b"</body></html>"
"""A 4.8 MB gateway error page."""

TRANSIENT: dict[str, tuple[dict[str, Any], type[WishubError], type[Exception] | None]] = {
    # name: (the scripted failure, the error after every attempt failed, its httpx cause)
    "reset before headers": ({"shape": "reset"}, APIConnectionError, httpx.ReadError),
    "closed before headers": ({"shape": "drop"}, APIConnectionError, httpx.RemoteProtocolError),
    "reset after headers": (
        {"shape": "reset_after_headers"},
        APIConnectionError,
        httpx.ReadError,
    ),
    "closed mid-body": ({"shape": "drop_mid_body"}, APIConnectionError, httpx.RemoteProtocolError),
    "slow body": ({"shape": "slow_body", "latency": 30.0}, APITimeoutError, httpx.ReadTimeout),
    "gateway 502 html": ({"shape": "html", "status": 502}, ServerError, None),
    "gateway 504 html": ({"shape": "html", "status": 504}, ServerError, None),
    "empty 503": ({"shape": "empty", "status": 503}, ServerError, None),
    "huge 502 html": ({"status": 502, "body": HUGE_HTML, "headers": HTML}, ServerError, None),
    "platform 500": ({"type": "INVOKE_MODEL_ERROR", "shape": "flat"}, ServerError, None),
    "429 json sent as html": (
        {"type": "rate_limit_exceeded", "headers": HTML},
        RateLimitError,
        None,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", TRANSIENT)
async def test_a_transient_fault_is_retried_then_typed(fake: FakeWishub, name: str) -> None:
    failure, error_class, cause = TRANSIENT[name]
    async with over_http(fake, timeout=READ_TIMEOUT) as wh:
        fake.fail(K1, times=1, **failure)
        assert (await wh.models.list()).ids == K1_MODELS  # the retry succeeded
        assert fake.count(K1) == 2

        fake.fail(K1, times=3, **failure)
        with pytest.raises(WishubError) as caught:
            await wh.models.list()
        assert fake.count(K1) == 5  # three attempts, no more

        assert (await wh.models.list()).ids == K1_MODELS  # still usable
        assert fake.count(K1) == 6
        assert_nothing_held(wh)
    error = caught.value
    assert type(error) is error_class
    assert cause is None or isinstance(error.__cause__, cause)
    assert len(str(error)) < 500  # a huge body never floods a message or a log line
    assert K1 not in str(error)
    assert K1 not in repr(error)


PERMANENT: dict[str, tuple[dict[str, Any], type[WishubError]]] = {
    "truncated json": ({"shape": "truncated"}, ResponseValidationError),
    "empty 200": ({"status": 200, "body": b""}, ResponseValidationError),
    "html 200": ({"status": 200, "body": b"<html>maintenance</html>", "headers": HTML}, ResponseValidationError),  # noqa: E501
    "wrong json 200": ({"status": 200, "body": b'{"object": "list", "data": {}}'}, ResponseValidationError),  # noqa: E501
    "bad request": ({"type": "invalid_request_error"}, BadRequestError),
}  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("name", PERMANENT)
async def test_a_permanent_fault_is_typed_and_not_retried(fake: FakeWishub, name: str) -> None:
    failure, error_class = PERMANENT[name]
    fake.fail(K1, times=1, **failure)
    async with over_http(fake) as wh:
        with pytest.raises(error_class):
            await wh.models.list()
        assert fake.count(K1) == 1
        assert (await wh.models.list()).ids == K1_MODELS
        assert_nothing_held(wh)
    assert fake.count(K1) == 2


@pytest.mark.anyio
async def test_a_refused_connection_is_retried_then_typed() -> None:
    async with AsyncWishub(app_key=K1, base_url=f"http://127.0.0.1:{closed_port()}/v1") as wh:
        with pytest.raises(APIConnectionError) as caught:
            await wh.models.list()
        assert_nothing_held(wh)
    assert type(caught.value) is APIConnectionError
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    status = wh.key_status()[0]
    assert (status.failures, status.successes) == (3, 0)  # nobody listens to count them


@pytest.mark.anyio
async def test_a_reset_says_so_on_every_backend(fake: FakeWishub) -> None:
    fake.fail(K1, shape="reset", times=3)
    async with over_http(fake) as wh:
        with pytest.raises(APIConnectionError, match=r"\(ReadError\): .*reset by peer"):
            await wh.models.list()  # asyncio's ReadError has no text: the cause's is shown


@pytest.mark.anyio
async def test_a_json_body_with_the_wrong_content_type_is_read(fake: FakeWishub) -> None:
    body = json.dumps({"object": "list", "data": [{"id": "x", "created": 1}]}).encode()
    fake.fail(K1, status=200, body=body, headers={"content-type": "text/plain"})
    async with over_http(fake) as wh:
        assert (await wh.models.list()).ids == ["x"]
    assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_a_huge_model_list_is_parsed_whole(fake: FakeWishub) -> None:
    ids = [f"model-{number:06d}" for number in range(50_000)]  # a 3.6 MB body
    fake.add_key(K1, ids)
    async with over_http(fake) as wh:
        assert (await wh.models.list()).ids == ids
    assert fake.count(K1) == 1


@pytest.mark.real_waits  # a wrong sleep would really sleep, and hit the deadline instead
@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "120"}, {"retry-after-ms": "120000"}, {"retry-after": "in 2 minutes"}],
    ids=["seconds", "ms", "http-date"],
)
@pytest.mark.anyio
async def test_a_retry_after_beyond_the_deadline_fails_at_once(
    fake: FakeWishub, headers: dict[str, str]
) -> None:
    if headers.get("retry-after") == "in 2 minutes":  # as an HTTP date, made when run
        headers = {"retry-after": email.utils.formatdate(time.time() + 120, usegmt=True)}
    fake.fail(K1, type="rate_limit_exceeded", headers=headers)
    async with over_http(fake, retry=RetryPolicy(deadline=5)) as wh:
        with pytest.raises(RateLimitError) as caught:
            await wh.models.list()
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 60  # well past the 5 s deadline
    assert fake.count(K1) == 1


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_retry_after_beyond_the_deadline_moves_to_another_key(fake: FakeWishub) -> None:
    fake.fail(K1, type="rate_limit_exceeded", retry_after="120")
    async with over_http(fake, app_keys=[K1, K2], retry=RetryPolicy(deadline=5)) as wh:
        assert (await wh.models.list()).ids == ["m-2"]
        assert [status.state for status in wh.key_status()] == ["cooling", "healthy"]
    assert (fake.count(K1), fake.count(K2)) == (1, 1)
