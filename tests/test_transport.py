"""The httpx chokepoint: every httpx exception becomes one of ours."""

from __future__ import annotations

import attrs
import httpx
import pytest
import respx
from conftest import K1

from wishub_async import AsyncWishub, Handler, Request, Response
from wishub_async._httpx import translate_httpx_error
from wishub_async.exceptions import APIConnectionError, APITimeoutError, WishubError

BASE = "https://wishub.test/v1"


def all_subclasses(cls: type[Exception]) -> list[type[Exception]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


HTTPX_ERRORS = sorted(
    {cls for cls in all_subclasses(httpx.HTTPError) if cls.__module__.startswith("httpx")},
    key=lambda cls: cls.__name__,
)


def test_the_httpx_hierarchy_is_covered() -> None:
    names = {cls.__name__ for cls in HTTPX_ERRORS}
    assert {"ConnectError", "ReadTimeout", "RemoteProtocolError", "PoolTimeout"} <= names


@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=lambda cls: cls.__name__)
def test_every_httpx_exception_maps_to_ours(cls: type[httpx.HTTPError]) -> None:
    request = httpx.Request("GET", f"{BASE}/models", headers={"authorization": f"Bearer {K1}"})
    if issubclass(cls, httpx.HTTPStatusError):
        exc: httpx.HTTPError = cls("boom", request=request, response=httpx.Response(500))
    else:
        exc = cls("boom", request=request)  # type: ignore[call-arg]
    ours = translate_httpx_error(exc, label="team-a")
    assert isinstance(ours, WishubError)
    assert isinstance(ours, APITimeoutError) == issubclass(cls, httpx.TimeoutException)
    assert isinstance(ours, APIConnectionError)
    assert ours.label == "team-a"
    assert K1 not in str(ours)
    assert cls.__name__ in str(ours) or "decode" in str(ours)


@pytest.mark.asyncio
@respx.mock(base_url=BASE)
async def test_raised_errors_chain_the_httpx_cause(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/models").mock(side_effect=httpx.ConnectError("refused"))
    async with AsyncWishub(app_key=K1, base_url=BASE) as wh:
        with pytest.raises(APIConnectionError) as caught:
            await wh.models.list()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert str(caught.value) == "connection failed (ConnectError): refused [key=…8f90]"


@pytest.mark.anyio
async def test_middleware_wraps_each_call_once_outside_retries() -> None:
    from wishub_async.testing import FakeWishub  # noqa: PLC0415

    seen: list[str] = []

    async def trace(request: Request, call_next: Handler) -> Response:
        seen.append(f"before {request.method} {request.path}")
        response = await call_next(request)
        seen.append(f"after {response.status_code} attempts={response.attempts}")
        return response

    async def tag(request: Request, call_next: Handler) -> Response:
        return await call_next(attrs.evolve(request, headers={"x-tag": "1"}))

    fake = FakeWishub([K1])
    fake.fail(K1, times=1)
    async with fake.client(app_key=K1, middleware=[trace, tag]) as wh:
        await wh.models.list()
    assert seen == ["before GET /models", "after 200 attempts=2"]
    assert [request.headers.get("x-tag") for request in fake.requests] == ["1", "1"]
    assert all("authorization" not in request.headers for request in fake.requests)


@pytest.mark.anyio
async def test_a_middleware_cannot_send_a_second_authorization() -> None:
    from wishub_async.testing import FakeWishub  # noqa: PLC0415

    async def meddle(request: Request, call_next: Handler) -> Response:
        headers = {"Authorization": "Bearer someone-else", "Content-Type": "text/plain"}
        return await call_next(attrs.evolve(request, headers=headers))

    fake = FakeWishub([K1])
    async with fake.client(app_key=K1, middleware=[meddle]) as wh:
        await wh.models.list()
    [sent] = fake.requests
    assert sent.key == K1
    assert sent.headers["content-type"] == "text/plain"
