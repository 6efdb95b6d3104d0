"""The ASGI relay example: a streamed answer goes out token by token."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest

from wishub_async.testing import FakeWishub

_PATH = Path(__file__).parent.parent / "examples" / "asgi_relay.py"
_SPEC = importlib.util.spec_from_file_location("asgi_relay", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
relay: Any = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(relay)

KEY = "0123456789abcdef0123456789abcdef"


async def call(app: Any, query: bytes) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query}
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_each_token_is_sent_as_it_arrives() -> None:
    fake = FakeWishub([KEY])
    fake.chat.reply = "one two three"
    async with fake.client(app_key=KEY) as wh:
        sent = await call(relay.make_app(wh), b"q=hi")
    assert sent[0] == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
    }
    bodies = [message["body"] for message in sent[1:]]
    assert bodies == [b"one ", b"two ", b"three", b""]
    assert [message.get("more_body", False) for message in sent[1:]] == [True, True, True, False]
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_an_error_mid_answer_ends_the_body_and_closes_the_stream() -> None:
    fake = FakeWishub([KEY])
    fake.chat.fail_stream(after=3)
    async with fake.client(app_key=KEY) as wh:
        sent = await call(relay.make_app(wh), b"q=hello+world")
    body = b"".join(message["body"] for message in sent[1:])
    assert body.startswith(b"You said: ")
    assert b"INVOKE_MODEL_ERROR" in body
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_a_failure_before_the_answer_is_a_502() -> None:
    fake = FakeWishub([KEY])
    async with fake.client(app_key="x" * 32) as wh:
        sent = await call(relay.make_app(wh), b"")
    assert sent[0]["status"] == 502
    assert b"INCORRECT_API_KEY_PROVIDED" in sent[1]["body"]


@pytest.mark.asyncio
async def test_served_through_an_http_client() -> None:
    fake = FakeWishub([KEY])
    async with fake.client(app_key=KEY) as wh:
        transport = httpx.ASGITransport(app=relay.make_app(wh))
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
            reply = await http.get("/", params={"q": "你好"})
    assert reply.status_code == 200
    assert reply.text == "You said: 你好"
