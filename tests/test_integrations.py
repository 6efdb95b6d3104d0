"""wishub_async.integrations: FastAPI lifespan and dependency, aiohttp cleanup_ctx."""

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
                "print(sorted({'fastapi', 'starlette', 'aiohttp'} & set(sys.modules)))"
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"


async def test_attach_wishub_composes_with_an_own_lifespan(backend: str, fake: FakeWishub) -> None:
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


async def test_fastapi_without_the_lifespan_fails_clearly() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(wh: wishub_fastapi.WishubDep) -> str:
        return repr(wh)  # pragma: no cover - never reached

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        with pytest.raises(ClientStateError, match="wishub_lifespan"):
            await http.get("http://app/")


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
