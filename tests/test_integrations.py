"""wishub_async.integrations: FastAPI, aiohttp, OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import K1, K2
from fastapi import FastAPI

from wishub_async import AsyncWishub
from wishub_async.exceptions import ClientStateError
from wishub_async.integrations import aiohttp as wishub_aiohttp
from wishub_async.integrations import fastapi as wishub_fastapi
from wishub_async.testing import FakeWishub


def test_importing_the_package_imports_no_framework() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys, wishub_async, wishub_async.integrations, wishub_async.testing;"
                "frameworks = {'fastapi', 'starlette', 'aiohttp', 'opentelemetry'};"
                "print(sorted(frameworks & set(sys.modules)))"
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_attach_wishub_composes_with_an_own_lifespan(fake: FakeWishub) -> None:
    client = fake.client(app_key=K1)
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("db open")
        async with wishub_fastapi.attach_wishub(app, client) as attached:
            assert attached is client
            yield
        events.append("db closed")

    app = FastAPI(lifespan=lifespan)

    @app.get("/count")
    async def count(wh: wishub_fastapi.WishubDep) -> int:
        return len(await wh.models.list())

    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("http://app/count")).json() == 2
    assert client.is_closed
    assert events == ["db open", "db closed"]


@pytest.mark.asyncio
async def test_fastapi_without_the_lifespan_fails_clearly() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(wh: wishub_fastapi.WishubDep) -> str:
        return repr(wh)  # pragma: no cover - never reached

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        with pytest.raises(ClientStateError, match="wishub_lifespan"):
            await http.get("http://app/")


@pytest.mark.asyncio
async def test_aiohttp_cleanup_ctx_with_its_own_key(fake: FakeWishub) -> None:
    second = web.AppKey("second", AsyncWishub)
    clients = [fake.client(app_key=K1), fake.client(app_key=K2)]

    async def both(request: web.Request) -> web.Response:
        first = await wishub_aiohttp.get_wishub(request).models.list()
        other = await wishub_aiohttp.get_wishub(request, second).models.list()
        return web.json_response([first.ids, other.ids])

    app = web.Application()
    app.cleanup_ctx.append(wishub_aiohttp.wishub_cleanup_ctx(lambda: clients[0]))
    app.cleanup_ctx.append(wishub_aiohttp.wishub_cleanup_ctx(lambda: clients[1], key=second))
    app.router.add_get("/", both)
    async with TestClient(TestServer(app)) as http:
        assert await (await http.get("/")).json() == [["m-1", "测试模型名称1"], ["m-2"]]
    assert all(client.is_closed for client in clients)


@pytest.mark.asyncio
async def test_aiohttp_without_the_cleanup_ctx_fails_clearly() -> None:
    seen: list[Exception] = []

    async def root(request: web.Request) -> web.Response:
        try:
            wishub_aiohttp.get_wishub(request)
        except ClientStateError as exc:
            seen.append(exc)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/", root)
    async with TestClient(TestServer(app)) as http:
        assert (await http.get("/")).status == 500
    assert "wishub_cleanup_ctx" in str(seen[0])


@pytest.mark.anyio
async def test_opentelemetry_spans_one_per_call_without_keys() -> None:
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )
    from opentelemetry.trace import SpanKind, StatusCode  # noqa: PLC0415

    from wishub_async.exceptions import AuthenticationError  # noqa: PLC0415
    from wishub_async.integrations.opentelemetry import tracing_middleware  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fake = FakeWishub([K1])
    fake.fail(K1, times=1)
    traced = tracing_middleware(provider.get_tracer("test"))
    async with fake.client(app_keys={"a": K1, "b": K2}, middleware=[traced]) as wh:
        await wh.with_key("a").models.list()
        with pytest.raises(AuthenticationError):
            await wh.with_key("b").models.list()
    ok, failed = exporter.get_finished_spans()
    assert (ok.name, ok.kind) == ("wishub GET /models", SpanKind.CLIENT)
    assert dict(ok.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/models",
        "http.response.status_code": 200,
        "wishub.label": "a",
        "wishub.attempts": 2,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "INCORRECT_API_KEY_PROVIDED"
    assert (failed.attributes or {})["http.response.status_code"] == 401
    assert (failed.attributes or {})["wishub.label"] == "b"
    everything = repr([(span.attributes, span.events, span.status) for span in (ok, failed)])
    assert K1 not in everything
    assert K2 not in everything
