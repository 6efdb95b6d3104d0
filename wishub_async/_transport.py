"""The wire: request specs, responses, and the httpx transport.

``HttpxTransport.send`` is the one chokepoint where httpx exceptions become ours;
``translate_httpx_error`` is the mapping, tested against every httpx exception class.
Error *bodies* are read in one place too: ``_errors.api_error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import httpx

from .exceptions import APIConnectionError, APITimeoutError, ClientStateError, WishubError

__all__ = [
    "Handler",
    "HttpxTransport",
    "Middleware",
    "Request",
    "Response",
    "Transport",
    "translate_httpx_error",
]

_MAX_CAUSES = 8


@attrs.frozen
class Request:
    """One logical API call, before a key is chosen.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL, such as ``/models``.
        json: the JSON body, or None.
        stream: whether the caller reads the body as a stream.
        headers: extra headers for this call only.
        check: run on every 2xx response inside the retry loop, before the call
            returns; it may read ahead (a stream's first chunk) and raise
            ``APIError`` or ``APIConnectionError`` to fail that attempt, which is
            then retried (or moved to another key) like any other failure. It must
            close the response when it raises.
    """

    method: str
    path: str
    json: Any = None
    stream: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict)
    check: Callable[[Response], Awaitable[None]] | None = attrs.field(default=None, eq=False)


@attrs.define(eq=False)
class Response:
    """A 2xx response: status, headers, and the body (read, or still streaming).

    Attributes:
        status_code: the HTTP status.
        headers: case-insensitive response headers.
        content: the whole body (empty for a stream until ``aread``).
        key: the label of the key that produced it.
        attempts: how many HTTP attempts the call took.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes = b""
    key: str = ""
    attempts: int = 1
    _chunks: AsyncIterator[bytes] | None = attrs.field(default=None, alias="chunks")
    _close: Callable[[], Awaitable[None]] | None = attrs.field(default=None, alias="close")
    _done: Callable[[BaseException | None], None] | None = attrs.field(default=None, init=False)
    scrub: Callable[[bytes], bytes] = attrs.field(default=bytes, init=False, repr=False)
    """Replaces the key in text the server sent (set per attempt): use it on any body
    that goes into an exception, in case the server echoes the key."""

    def on_done(self, callback: Callable[[BaseException | None], None]) -> None:
        """Have ``aclose`` call ``callback`` once, with the error that ended the body."""
        self._done = callback

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives (or the read body at once)."""
        if self._chunks is None:
            if self.content:
                yield self.content
            return
        async for chunk in self._chunks:
            yield chunk

    async def aread(self) -> bytes:
        """Read the rest of a streamed body and close it."""
        if self._chunks is not None:
            try:
                self.content = b"".join([chunk async for chunk in self._chunks])
            finally:
                self._chunks = None
                await self.aclose()
        return self.content

    def release(self) -> None:
        """Settle the call without I/O (slots, key health): for a body left unclosed.

        A finaliser may call this; the connection itself is left to the pool's own
        cleanup, since a finaliser must not do I/O.
        """
        done, self._done = self._done, None
        if done is not None:
            done(None)

    async def aclose(self, error: BaseException | None = None) -> None:
        """Release the connection of a streamed body; safe to call twice.

        Args:
            error: what ended the body early, if anything; passed to ``on_done``.
        """
        close, self._close = self._close, None
        done, self._done = self._done, None
        try:
            if close is not None:
                await close()
        finally:
            if done is not None:
                done(error)


Handler = Callable[[Request], Awaitable[Response]]
"""The rest of the chain: give it a request, await the response."""

Middleware = Callable[[Request, Handler], Awaitable[Response]]
"""``async def mw(request, call_next) -> Response``; runs once per call, outside retries."""


class Transport(Protocol):
    """What the client needs from an HTTP library."""

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        *,
        timeout: httpx.Timeout,
        stream: bool,
        key: str,
    ) -> Response:
        """Send one request; raise only ``APIConnectionError`` (or a subclass)."""
        ...

    async def aclose(self) -> None:
        """Close the pool, if this transport owns it."""
        ...


def translate_httpx_error(exc: httpx.HTTPError, key: str | None) -> WishubError:
    """Our exception for an httpx one; the message never includes a header value."""
    name = type(exc).__name__
    detail = _first_message(exc) or name
    if isinstance(exc, httpx.TimeoutException):
        what = {
            "ConnectTimeout": "connecting",
            "ReadTimeout": "waiting for the response",
            "WriteTimeout": "sending the request",
            "PoolTimeout": "waiting for a free connection",
        }.get(name, "the request")
        return APITimeoutError(f"timed out {what} ({name})", key=key)
    if isinstance(exc, httpx.DecodingError):
        return APIConnectionError(f"could not decode the response body: {detail}", key=key)
    return APIConnectionError(f"connection failed ({name}): {detail}", key=key)


def _first_message(exc: BaseException) -> str:
    """The first non-empty message down the cause chain (asyncio's ReadError has none)."""
    cause: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if cause is None:
            break
        if str(cause):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return ""


class HttpxTransport:
    """Sends on one pooled ``httpx.AsyncClient``; closes it only if it owns it."""

    def __init__(self, client: httpx.AsyncClient, *, owned: bool) -> None:
        self.client = client
        self.owned = owned

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        *,
        timeout: httpx.Timeout,
        stream: bool,
        key: str,
    ) -> Response:
        """Send one request on the pool (see ``Transport.send``)."""
        request = self.client.build_request(
            method, url, headers=headers, content=content, timeout=timeout
        )
        try:
            reply = await self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise translate_httpx_error(exc, key) from exc
        except RuntimeError as exc:
            if not self.client.is_closed:
                raise
            raise ClientStateError(
                "the http_client given to AsyncWishub is closed; it belongs to the caller"
            ) from exc
        if not stream:
            return Response(reply.status_code, reply.headers, reply.content, key)
        return Response(
            reply.status_code,
            reply.headers,
            key=key,
            chunks=_chunks(reply, key),
            close=reply.aclose,
        )

    async def aclose(self) -> None:
        """Close the pool if we created it."""
        if self.owned:
            await self.client.aclose()


async def _chunks(reply: httpx.Response, key: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        raise translate_httpx_error(exc, key) from exc
