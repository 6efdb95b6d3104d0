"""The aiohttp transport (``backend="aiohttp"``) against a real loopback server."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

import aiohttp
import httpx
import pytest
import pytest_asyncio
import trio
from aiohttp import web
from aiohttp.test_utils import TestServer

from wishub_async import AsyncWishub, RetryPolicy, Timeout
from wishub_async._aiohttp import AiohttpTransport, client_timeout, translate_aiohttp_error
from wishub_async._wire import WireRequest, WireResponse, WireStream
from wishub_async.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ClientStateError,
    ConfigurationError,
    ServerError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FAKE_KEY = "fake0000000000000000000000000001"
MODELS = {
    "object": "list",
    "data": [
        {"id": "测试模型名称1", "object": "model", "created": "", "owned_by": ""},
        {"id": "4bd107bff85941239e27b1509eccfe98", "object": "model", "created": 1700000000},
    ],
}
BAD_KEY_BODY = {
    "error": {"code": "500004", "type": "INCORRECT_API_KEY_PROVIDED", "message": "AppKey不正确"}
}
ONE_TRY = RetryPolicy(attempts=1)


async def send(
    transport: AiohttpTransport,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    stream: bool = False,
) -> WireResponse:
    """One request through the transport, with a 5 s timeout and the label key-0."""
    request = WireRequest(method, url, headers or {}, content, Timeout.every(5.0), stream, "key-0")
    return await transport.send(request)


def body_of(response: WireResponse) -> WireStream:
    assert response.stream is not None
    return response.stream


class Fake:
    """A tiny wishub on loopback; the path prefix picks the behaviour."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/ok/v1/models", self.models)
        self.app.router.add_get("/bad-key/v1/models", self.bad_key)
        self.app.router.add_get("/html/v1/models", self.html)
        self.app.router.add_get("/hang/v1/models", self.hang)
        self.app.router.add_get("/drop/v1/models", self.drop)
        self.app.router.add_get("/redirect/v1/models", self.redirect)
        self.app.router.add_post("/ok/v1/chat/completions", self.stream)
        self.app.router.add_post("/drop/v1/chat/completions", self.drop)

    async def models(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response(MODELS, headers={"X-Request-Id": "req-1"})

    async def bad_key(self, _: web.Request) -> web.Response:
        return web.json_response(BAD_KEY_BODY, status=401)

    async def html(self, _: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    async def hang(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return web.json_response(MODELS)

    async def drop(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"object": "list", "da')
        await asyncio.sleep(0.01)  # let the first bytes leave before the connection drops
        assert request.transport is not None
        request.transport.close()
        return response

    async def redirect(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/ok/v1/models")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("data:one\n\n", "data:two\n\n", "data: [DONE]\n\n"):
            await response.write(word.encode())
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    app = Fake()
    server = TestServer(app.app, host="127.0.0.1", shutdown_timeout=0.1)
    await server.start_server()
    try:
        yield app, f"http://127.0.0.1:{server.port}"
    finally:
        app.release.set()
        await server.close()


def client(root: str, path: str = "ok", **options: object) -> AsyncWishub:
    options.setdefault("retry", ONE_TRY)
    return AsyncWishub(
        app_key=FAKE_KEY,
        base_url=f"{root}/{path}/v1",
        backend="aiohttp",
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_lists_models_over_aiohttp(fake: tuple[Fake, str]) -> None:
    app, root = fake
    async with client(root) as wh:
        assert isinstance(wh._shared.transport, AiohttpTransport)
        models = await wh.models.list()
        again = await wh.models.list()
    assert models.ids == ["测试模型名称1", "4bd107bff85941239e27b1509eccfe98"]
    assert models.data[0].created is None
    assert models.data[1].created is not None
    assert again == models
    sent = app.seen[0]
    assert sent["Authorization"] == f"Bearer {FAKE_KEY}"
    assert sent["Accept"] == "application/json"
    assert sent["User-Agent"].startswith("wishub-async/")


@pytest.mark.asyncio
async def test_response_headers_are_case_insensitive(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport(max_connections=2)
    try:
        response = await send(
            transport,
            "GET",
            f"{root}/ok/v1/models",
            headers={"authorization": f"Bearer {FAKE_KEY}"},
        )
    finally:
        await transport.aclose()
    assert response.status_code == 200
    assert response.headers["x-request-id"] == response.headers["X-REQUEST-ID"] == "req-1"
    assert json.loads(response.content) == MODELS


@pytest.mark.asyncio
async def test_error_status_becomes_typed_api_error(fake: tuple[Fake, str]) -> None:
    _, root = fake
    async with client(root, "bad-key") as wh:
        with pytest.raises(AuthenticationError) as caught:
            await wh.models.list()
    error = caught.value
    assert error.status_code == 401
    assert error.type == "INCORRECT_API_KEY_PROVIDED"
    assert error.code == 500004
    assert error.message == "AppKey不正确"
    assert error.body == BAD_KEY_BODY
    assert FAKE_KEY not in str(error)
    assert FAKE_KEY not in repr(error)


@pytest.mark.asyncio
async def test_html_error_body_falls_back_to_the_status(fake: tuple[Fake, str]) -> None:
    _, root = fake
    async with client(root, "html") as wh:
        with pytest.raises(ServerError) as caught:
            await wh.models.list()
    assert caught.value.status_code == 502
    assert "bad gateway" in caught.value.message


@pytest.mark.asyncio
async def test_redirects_are_not_followed(fake: tuple[Fake, str]) -> None:
    app, root = fake
    async with client(root, "redirect") as wh:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever 302 maps to
            await wh.models.list()
    assert getattr(caught.value, "status_code", None) == 302
    assert app.seen == []


@pytest.mark.asyncio
async def test_connection_refused(unused_tcp_port: int) -> None:
    async with client(f"http://127.0.0.1:{unused_tcp_port}") as wh:
        with pytest.raises(APIConnectionError) as caught:
            await wh.models.list()
    assert not isinstance(caught.value, APITimeoutError)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert FAKE_KEY not in str(caught.value)


@pytest.mark.asyncio
async def test_read_timeout(fake: tuple[Fake, str]) -> None:
    _, root = fake
    async with client(root, "hang", timeout=httpx.Timeout(5.0, read=0.05)) as wh:
        with pytest.raises(APITimeoutError) as caught:
            await wh.models.list()
    assert "waiting for the response" in str(caught.value)
    assert caught.value.key == wh.key_labels[0]


@pytest.mark.asyncio
async def test_dropped_mid_body_then_usable(fake: tuple[Fake, str]) -> None:
    _, root = fake
    async with client(root, "drop") as wh:
        with pytest.raises(APIConnectionError) as caught:
            await wh.models.list()
        assert not isinstance(caught.value, APITimeoutError)
        assert isinstance(caught.value.__cause__, aiohttp.ClientError)
        good = wh.with_options(base_url=f"{root}/ok/v1")
        assert len(await good.models.list()) == 2


@pytest.mark.asyncio
async def test_a_retried_drop_reaches_the_attempt_limit(fake: tuple[Fake, str]) -> None:
    app, root = fake
    policy = RetryPolicy(attempts=2, initial_wait=0.0, jitter=0.0)
    async with client(root, "drop", retry=policy) as wh:
        with pytest.raises(APIConnectionError):
            await wh.models.list()
        assert wh.key_status()[0].failures == 2
    assert app.seen == []


@pytest.mark.asyncio
async def test_streaming_yields_chunks_and_releases(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport(max_connections=1)
    try:
        response = await send(
            transport,
            "POST",
            f"{root}/ok/v1/chat/completions",
            headers={"content-type": "application/json"},
            content=b"{}",
            stream=True,
        )
        body = b"".join([chunk async for chunk in body_of(response)])
        await body_of(response).aclose()
        await body_of(response).aclose()
        # The one pooled connection came back: a second request can use it.
        again = await send(
            transport, "POST", f"{root}/ok/v1/chat/completions", content=b"{}", stream=True
        )
        assert (await body_of(again).read()).startswith(b"data:one")
    finally:
        await transport.aclose()
    assert body == b"data:one\n\ndata:two\n\ndata: [DONE]\n\n"


@pytest.mark.asyncio
async def test_stream_closed_early_frees_the_pool(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport(max_connections=1)
    try:
        for _ in range(3):
            response = await send(
                transport, "POST", f"{root}/ok/v1/chat/completions", content=b"{}", stream=True
            )
            await body_of(response).aclose()
    finally:
        await transport.aclose()


@pytest.mark.asyncio
async def test_stream_dropped_midway_is_a_connection_error(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport(max_connections=1)
    try:
        response = await send(
            transport, "POST", f"{root}/drop/v1/chat/completions", content=b"{}", stream=True
        )
        with pytest.raises(APIConnectionError) as caught:
            await body_of(response).read()
        assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
        assert caught.value.label == "key-0"
    finally:
        await transport.aclose()


@pytest.mark.asyncio
async def test_a_pool_is_bound_to_its_first_loop(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport(max_connections=1)
    other = asyncio.new_event_loop()
    try:
        assert (await send(transport, "GET", f"{root}/ok/v1/models")).status_code == 200
        first, transport._loop = transport._loop, other
        with pytest.raises(ClientStateError, match="event loop"):
            await send(transport, "GET", f"{root}/ok/v1/models")
        transport._loop = first
    finally:
        other.close()
        await transport.aclose()


def test_pool_size_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        AsyncWishub(app_key=FAKE_KEY, backend="aiohttp", max_concurrency=0)


@pytest.mark.asyncio
async def test_aclose_is_idempotent_and_final(fake: tuple[Fake, str]) -> None:
    _, root = fake
    transport = AiohttpTransport()
    await transport.aclose()  # never opened
    wh = client(root)
    async with wh:
        await wh.models.list()
    await wh.aclose()
    used = wh._shared.transport
    assert isinstance(used, AiohttpTransport)
    await used.aclose()
    assert "closed" in repr(used)
    with pytest.raises(ClientStateError):
        await send(used, "GET", f"{root}/ok/v1/models")


def test_trio_is_refused_clearly() -> None:
    async def main() -> None:
        async with AsyncWishub(
            app_key=FAKE_KEY, base_url="http://127.0.0.1:9/v1", backend="aiohttp"
        ) as wh:
            with pytest.raises(ConfigurationError, match="asyncio"):
                await wh.models.list()

    trio.run(main)


def test_missing_aiohttp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "wishub_async._aiohttp")
    with pytest.raises(ConfigurationError, match=r"wishub-async\[aiohttp\]"):
        AsyncWishub(app_key=FAKE_KEY, backend="aiohttp")


def test_http_client_needs_the_httpx_backend() -> None:
    with pytest.raises(ConfigurationError, match="backend='httpx'"):
        AsyncWishub(app_key=FAKE_KEY, backend="aiohttp", http_client=httpx.AsyncClient())


def test_timeouts_map_from_ours() -> None:
    mapped = client_timeout(Timeout.coerce(httpx.Timeout(600.0, connect=10.0)))
    assert mapped.total is None
    assert mapped.sock_connect == 10.0
    assert mapped.sock_read == 600.0
    assert mapped.connect == 610.0
    unlimited = client_timeout(Timeout.every(None))
    assert (unlimited.connect, unlimited.sock_connect, unlimited.sock_read) == (None, None, None)


def _aiohttp_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in dir(aiohttp):
        value = getattr(aiohttp, name)
        if isinstance(value, type) and issubclass(value, aiohttp.ClientError):
            found.append(value)
    return found


@pytest.mark.parametrize("cls", _aiohttp_exceptions(), ids=lambda cls: cls.__name__)
def test_every_aiohttp_error_maps_to_ours(cls: type[BaseException]) -> None:
    exc = cls.__new__(cls)
    BaseException.__init__(exc)
    if isinstance(exc, aiohttp.ClientResponseError):
        exc.status, exc.message = 400, "Bad Request"
    error = translate_aiohttp_error(exc, "key-0")
    assert isinstance(error, APIConnectionError)
    assert isinstance(error, APITimeoutError) == issubclass(cls, TimeoutError)
    assert error.key == "key-0"


def test_bare_asyncio_timeout_is_a_timeout() -> None:
    assert isinstance(translate_aiohttp_error(TimeoutError(), None), APITimeoutError)


def test_response_error_text_leaves_headers_out() -> None:
    exc = aiohttp.ClientResponseError(
        None,  # type: ignore[arg-type]
        (),
        status=400,
        message="Expected HTTP/",
        headers={"Authorization": f"Bearer {FAKE_KEY}"},  # type: ignore[arg-type]
    )
    assert FAKE_KEY not in str(translate_aiohttp_error(exc, "key-0"))
