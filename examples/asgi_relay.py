"""Relay a streamed chat answer to an HTTP client token by token, in plain ASGI.

Serve it with any ASGI server (``uvicorn asgi_relay:app``). With FastAPI the same
generator is the whole endpoint: ``return StreamingResponse(relay_tokens(wh, q))``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any
from urllib.parse import parse_qs

from wishub_async import AsyncWishub
from wishub_async.exceptions import WishubError

MODEL = "4bd107bff85941239e27b1509eccfe98"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]


async def relay_tokens(
    wh: AsyncWishub, prompt: str, model: str = MODEL
) -> AsyncGenerator[str, None]:
    """Yield the answer's text as it arrives; the stream closes however this ends."""
    messages = [{"role": "user", "content": prompt}]
    stream = await wh.chat.completions.create(model=model, messages=messages, stream=True)
    async with stream:
        async for chunk in stream:
            if chunk.text:
                yield chunk.text


def make_app(wh: AsyncWishub) -> App:
    """An ASGI app answering ``GET /?q=...`` with the streamed answer as plain text."""

    async def app(scope: Message, _receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        prompt = parse_qs(scope["query_string"].decode()).get("q", ["Hello"])[0]
        async with aclosing(relay_tokens(wh, prompt)) as tokens:
            try:
                first = await anext(tokens, "")  # errors before the answer starts -> 502
            except WishubError as exc:
                await _reply(send, 502, str(exc).encode())
                return
            await send({"type": "http.response.start", "status": 200, "headers": _TEXT})
            await send({"type": "http.response.body", "body": first.encode(), "more_body": True})
            try:
                async for token in tokens:
                    body = token.encode()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            except WishubError as exc:  # the answer broke off: say so at the end
                await send({"type": "http.response.body", "body": f"\n[{exc}]".encode()})
                return
        await send({"type": "http.response.body", "body": b""})

    return app


_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _TEXT})
    await send({"type": "http.response.body", "body": body})
