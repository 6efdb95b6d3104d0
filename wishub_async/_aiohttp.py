"""The fast transport for asyncio: one ``aiohttp.ClientSession`` behind our ``Transport``.

Selected with ``AsyncWishub(backend="aiohttp")`` and installed with the extra
``wishub-async[aiohttp]``. It skips ``httpx.AsyncClient`` entirely (our ``Transport``
protocol is the seam), which is where most of the per-request cost of the default
path lies. It is the one module allowed to use asyncio, and ``AiohttpTransport.send``
is this transport's one chokepoint: every aiohttp or asyncio exception becomes an
``APIConnectionError`` (or ``APITimeoutError``) here, and nowhere else.

Differences from the httpx transport, each deliberate:

- Proxy settings from the environment are not read (aiohttp would look them up in a
  worker thread on every request); pass ``backend="httpx"`` behind a proxy.
- Cookies are never stored: a key is only a header, and one key's cookies must not
  ride along with another key's requests on the shared pool.
- ``httpx.Timeout.write`` has no aiohttp counterpart and is ignored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from ._transport import Response
from .exceptions import (
    APIConnectionError,
    APITimeoutError,
    ClientStateError,
    ConfigurationError,
    WishubError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    import httpx

__all__ = ["AiohttpTransport", "client_timeout", "translate_aiohttp_error"]

_KEEPALIVE_SECONDS = 30.0


class AiohttpTransport:
    """Sends on one pooled ``aiohttp.ClientSession`` that it creates and closes.

    The session is created on the first ``send``, inside the running event loop, and
    is bound to that loop. TLS certificates are verified; redirects are not followed.

    Args:
        max_connections: the pool size (aiohttp's ``TCPConnector(limit=...)``).
    """

    def __init__(self, *, max_connections: int = 100) -> None:
        if max_connections < 1:
            raise ConfigurationError("max_connections must be >= 1")
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._timeout_in: httpx.Timeout | None = None
        self._timeout_out = aiohttp.ClientTimeout()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._session else "unopened"
        return f"<AiohttpTransport {state} max_connections={self.max_connections}>"

    def _open(self) -> aiohttp.ClientSession:
        """The session, created on first use in the running asyncio loop."""
        if self._closed:
            raise ClientStateError("this AiohttpTransport is closed")
        loop = _running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                keepalive_timeout=_KEEPALIVE_SECONDS,
                ssl=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                raise_for_status=False,
            )
            # aiohttp silently resends an idempotent request once when a kept-alive
            # connection turns out closed. Retries are the RetryPolicy's decision (and
            # are counted, logged and bounded there), so switch that off. There is no
            # public switch; the attribute exists in aiohttp 3.9 to 3.14 at least.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False  # noqa: SLF001
            self._loop = loop
        elif loop is not self._loop:
            raise ConfigurationError(
                "backend='aiohttp' binds its pool to the event loop of the first request;"
                " this request runs in another loop (create one client per loop)"
            )
        return self._session

    def _timeout(self, timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
        # The same httpx.Timeout object comes with every request of a view: map it once.
        if timeout is not self._timeout_in:
            self._timeout_out = client_timeout(timeout)
            self._timeout_in = timeout
        return self._timeout_out

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
        """Send one request on the pool (see ``Transport.send``).

        Raises:
            APIConnectionError: no usable response (``APITimeoutError`` on timeouts).
            ConfigurationError: not running under asyncio (trio needs ``backend="httpx"``).
            ClientStateError: the transport was closed.
        """
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = self._open()
        try:
            reply = await session.request(
                method,
                url,
                headers=headers,
                data=content,
                timeout=self._timeout(timeout),
                allow_redirects=False,
            )
            if stream:
                return Response(
                    reply.status,
                    reply.headers,
                    key=key,
                    chunks=_chunks(reply, key),
                    close=_closer(reply),
                )
            body = await reply.read()  # releases the connection, or closes it on error
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate_aiohttp_error(exc, key) from exc
        return Response(reply.status, reply.headers, body, key)

    async def aclose(self) -> None:
        """Close the session and its connections; safe to call twice, or never opened."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """The aiohttp timeouts matching an ``httpx.Timeout``.

    httpx's *pool* and *connect* phases together are aiohttp's ``connect`` (waiting for
    a pooled connection, then opening one); *connect* alone is ``sock_connect``;
    *read* (between two reads) is ``sock_read``. There is no total and no write timeout.
    """
    pool = timeout.pool
    connect = timeout.connect
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if pool is None or connect is None else pool + connect,
        sock_connect=connect,
        sock_read=timeout.read,
    )


def translate_aiohttp_error(exc: BaseException, key: str | None) -> WishubError:
    """Our exception for an aiohttp or asyncio one; the message never includes a header."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"timed out connecting ({name})", key=key)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, ServerTimeoutError, others
        return APITimeoutError(f"timed out waiting for the response ({name})", key=key)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its str() is fine, but it holds the response headers: name only what we need.
        return APIConnectionError(
            f"unreadable response ({name}): {exc.status} {exc.message}", key=key
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(
            f"the connection broke while reading the body ({name}): {_describe(exc)}", key=key
        )
    return APIConnectionError(f"connection failed ({name}): {_describe(exc)}", key=key)


def _describe(exc: BaseException) -> str:
    # The chokepoint must not fail itself: some aiohttp errors' str() needs their fields.
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # noqa: BLE001 - any failure to describe falls back to the name
        return type(exc).__name__


def _running_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "backend='aiohttp' needs a running asyncio event loop (it does not work under"
            " trio or outside async code); use backend='httpx' there"
        ) from None


async def _chunks(reply: aiohttp.ClientResponse, key: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        reply.close()
        raise translate_aiohttp_error(exc, key) from exc


def _closer(reply: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        # Back to the pool when the body was read to the end; otherwise drop the socket.
        if reply.content.at_eof():
            reply.release()
        else:
            reply.close()

    return close
