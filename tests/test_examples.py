"""The example apps in examples/, each driven in-process against a FakeWishub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp_app
import fastapi_app
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import K1, K2, WRONG
from fastapi import FastAPI

from wishub_async import AsyncWishub
from wishub_async.testing import FakeWishub


def factory(
    fake: FakeWishub, **options: Any
) -> tuple[Callable[[], AsyncWishub], list[AsyncWishub]]:
    """A client factory for the apps, and the list of the clients it built."""
    built: list[AsyncWishub] = []

    def build() -> AsyncWishub:
        client = fake.client(**options)
        built.append(client)
        return client

    return build, built


@asynccontextmanager
async def asgi(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app``, with its lifespan running (ASGITransport does not)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        yield http


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """aiohttp's own test server (loopback) and client for ``app``."""
    async with TestClient(TestServer(app)) as client:
        yield client


# -- FastAPI ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapi_lists_models_and_closes_its_client(fake: FakeWishub) -> None:
    build, built = factory(fake, app_key=K1)
    app = fastapi_app.create_app(build)
    async with asgi(app) as http:
        reply = await http.get("/models")
        assert reply.status_code == 200
        assert reply.json() == {"models": ["m-1", "测试模型名称1"]}
        assert [client.is_closed for client in built] == [False]
        assert (await http.get("/keys")).json() == [
            {"label": "…" + K1[-4:], "key": "…" + K1[-4:], "state": "healthy"}
        ]
    assert [client.is_closed for client in built] == [True]
    assert not hasattr(app.state, "wishub")


@pytest.mark.parametrize(
    ("failure", "status", "error_class"),
    [
        ({"type": "rate_limit_exceeded"}, 503, "RateLimitError"),
        ({"type": "insufficient_quota"}, 503, "QuotaExceededError"),
        ({"type": "INVOKE_MODEL_ERROR"}, 502, "ServerError"),
        ({"type": None, "shape": "drop"}, 502, "APIConnectionError"),
    ],
)
@pytest.mark.asyncio
async def test_fastapi_turns_platform_failures_into_json(
    fake: FakeWishub, failure: dict[str, Any], status: int, error_class: str
) -> None:
    fake.fail(times=10, **failure)
    build, _ = factory(fake, app_key=K1)
    async with asgi(fastapi_app.create_app(build)) as http:
        reply = await http.get("/models")
        assert reply.status_code == status
        assert reply.json()["error"]["class"] == error_class
        assert K1 not in reply.text


@pytest.mark.asyncio
async def test_fastapi_a_wrong_key_is_a_bad_gateway_and_not_sent_again(fake: FakeWishub) -> None:
    build, _ = factory(fake, app_keys={"prod": WRONG})
    async with asgi(fastapi_app.create_app(build)) as http:
        reply = await http.get("/models")
        assert reply.status_code == 502
        assert reply.json()["error"]["type"] == "INCORRECT_API_KEY_PROVIDED"
        assert WRONG not in reply.text
        keys = (await http.get("/keys")).json()
        assert keys == [{"label": "prod", "key": "…" + WRONG[-4:], "state": "quarantined"}]
        again = await http.get("/models")  # the quarantined key is not tried again
        assert again.status_code == 502
        assert again.json()["error"]["class"] == "AuthenticationError"
    assert fake.count(WRONG) == 1


@pytest.mark.asyncio
async def test_fastapi_module_app_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, fake: FakeWishub
) -> None:
    async with fake.serve() as base_url:
        monkeypatch.setenv("WISHUB_APP_KEY", K2)
        monkeypatch.setenv("WISHUB_BASE_URL", base_url)
        async with asgi(fastapi_app.app) as http:
            assert (await http.get("/models")).json() == {"models": ["m-2"]}
    assert fake.count(K2) == 1


# -- aiohttp (asyncio only) ------------------------------------------------------


@pytest.mark.asyncio
async def test_aiohttp_lists_models_and_closes_its_client(fake: FakeWishub) -> None:
    build, built = factory(fake, app_keys={"team-a": K1, "team-b": K2})
    async with served(aiohttp_app.create_app(build)) as client:
        replies = [await client.get("/models") for _ in range(2)]
        assert [reply.status for reply in replies] == [200, 200]
        ids = {tuple((await reply.json())["models"]) for reply in replies}
        assert ids == {("m-1", "测试模型名称1"), ("m-2",)}  # spread over both keys
        keys = await (await client.get("/keys")).json()
        assert [(entry["label"], entry["state"]) for entry in keys] == [
            ("team-a", "healthy"),
            ("team-b", "healthy"),
        ]
        assert [client.is_closed for client in built] == [False]
    assert [client.is_closed for client in built] == [True]


@pytest.mark.asyncio
async def test_aiohttp_a_platform_failure_is_a_bad_gateway(fake: FakeWishub) -> None:
    fake.fail(times=3, type="INVOKE_MODEL_ERROR")
    build, _ = factory(fake, app_key=K1)
    async with served(aiohttp_app.create_app(build)) as client:
        reply = await client.get("/models")
        assert reply.status == 502
        error = (await reply.json())["error"]
        assert error == {"class": "ServerError", "type": "INVOKE_MODEL_ERROR"}
    assert fake.count(K1) == 3  # the default policy's three attempts


@pytest.mark.asyncio
async def test_aiohttp_a_wrong_key_is_a_bad_gateway_and_not_sent_again(fake: FakeWishub) -> None:
    build, _ = factory(fake, app_keys={"prod": WRONG})
    async with served(aiohttp_app.create_app(build)) as client:
        reply = await client.get("/models")
        assert reply.status == 502
        assert WRONG not in await reply.text()
        again = await client.get("/models")
        assert again.status == 502
        keys = await (await client.get("/keys")).json()
        assert keys == [{"label": "prod", "key": "…" + WRONG[-4:], "state": "quarantined"}]
    assert fake.count(WRONG) == 1


@pytest.mark.anyio
async def test_fastapi_relays_a_streamed_answer(fake: FakeWishub) -> None:
    build, built = factory(fake, app_key=K1)
    model = fake.models_of(K1)[0]
    async with asgi(fastapi_app.create_app(build)) as http:
        reply = await http.post("/chat", json={"model": model, "prompt": "你好 relay"})
        missing = await http.post("/chat", json={"model": "no-such-model", "prompt": "x"})
        assert fake.chat.open_streams == 0
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.text == "You said: 你好 relay"
    assert missing.status_code == 502
    assert missing.json()["error"]["class"] == "NotFoundError"
    assert built[0].key_status()[0].in_flight == 0
