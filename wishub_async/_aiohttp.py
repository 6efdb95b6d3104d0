"""The fast transport for asyncio: one ``aiohttp.ClientSession`` behind our ``Transport``.

Selected with ``AsyncWishub(backend="aiohttp")`` and installed with the extra
``wishub-async[aiohttp]``. It skips ``httpx.AsyncClient`` entirely (our ``Transport``
protocol is the seam), which is where most of the per-request cost of the default
path lies. It is the one module allowed to use asyncio. ``translate_aiohttp_error``
is its one chokepoint, applied by ``map_errors`` around the send, the body read and
every stream read, so every aiohttp or asyncio exception becomes ours there and
nowhere else.

``aclose()`` ends every send and read in flight: closing an aiohttp session does not
wake a task waiting for a body, so the transport keeps the tasks it serves and
cancels them (asyncio's ``cancel``/``uncancel``, as ``asyncio.timeout`` does), and
each one ends with ``ClientClosedError``.

Differences from the httpx transport, each deliberate:

- Proxy settings from the environment are not read (aiohttp would look them up in a
  worker thread on every request); pass ``backend="httpx"`` behind a proxy.
- Cookies are never stored: a key is only a header, and one key's cookies must not
  ride along with another key's requests on the shared pool.
- ``Timeout.write`` has no aiohttp counterpart and is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp

from ._timeout import Timeout
from ._wire import WireRequest, WireResponse
from .exceptions import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    WishubError,
)

__all__ = ["AiohttpTransport", "client_timeout", "translate_aiohttp_error"]

_KEEPALIVE_SECONDS = 30.0
_DRAIN_SECONDS = 5.0


class AiohttpTransport:
    """Sends on one pooled ``aiohttp.ClientSession`` that it creates and closes.

    The session is created on the first ``send``, inside the running event loop, and
    is bound to that loop. TLS certificates are verified; redirects are not followed.

    Args:
        max_connections: the pool size (aiohttp's ``TCPConnector(limit=...)``).
    """

    def __init__(self, *, max_connections: int = 100) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._tasks: dict[asyncio.Task[object], int] = {}
        self._drained: asyncio.Event | None = None
        self._timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open" if self._session else "unopened"
        return f"<AiohttpTransport {state} max_connections={self.max_connections}>"

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` has begun."""
        return self._closing

    def _open(self) -> aiohttp.ClientSession:
        """The session, created on first use in the running asyncio loop."""
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
            raise ClientStateError(
                "this AsyncWishub (backend='aiohttp') was first used in another event loop;"
                " its connections belong to that loop (create one client per event loop)"
            )
        return self._session

    def _timeout(self, timeout: Timeout) -> aiohttp.ClientTimeout:
        mapped = self._timeouts.get(timeout)
        if mapped is None:
            mapped = self._timeouts[timeout] = client_timeout(timeout)
        return mapped

    async def send(self, request: WireRequest) -> WireResponse:
        """Send one attempt on the pool (see ``Transport.send``).

        Raises:
            APIConnectionError: no usable response (``APITimeoutError`` on timeouts).
            ClientClosedError: ``aclose()`` ran while the attempt was in flight.
            ClientStateError: not under asyncio, or in another loop than the first.
        """
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            if self._closing:
                raise ClientClosedError("the client is closed", label=request.label)
            session = self._open()
        label = request.label
        with self.map_errors(label):
            reply = await session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.content,
                timeout=self._timeout(request.timeout),
                allow_redirects=False,
            )
            if request.stream:
                return WireResponse(
                    reply.status, reply.headers, stream=_AiohttpStream(self, reply, label)
                )
            body = await reply.read()  # releases the connection, or closes it on error
        return WireResponse(reply.status, reply.headers, body)

    @contextmanager
    def map_errors(self, label: str | None) -> Iterator[None]:
        """Run a wire operation: abortable by ``aclose()``, aiohttp errors made ours."""
        task = self._enter(label)
        try:
            yield
        except asyncio.CancelledError:
            self._closed_on(task, label)
            raise
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            raise translate_aiohttp_error(exc, label) from exc
        finally:
            self._leave(task)

    def _enter(self, label: str | None) -> asyncio.Task[object]:
        """Count the running task as in flight, for ``aclose()`` to cancel."""
        if self._closing:
            raise ClientClosedError("the client is closed", label=label)
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - aiohttp itself needs a task
            raise ClientStateError("backend='aiohttp' must run inside an asyncio task")
        tasks = self._tasks
        tasks[task] = tasks.get(task, 0) + 1
        return task

    def _leave(self, task: asyncio.Task[object]) -> None:
        tasks = self._tasks
        count = tasks.pop(task) - 1
        if count:
            tasks[task] = count
        elif self._drained is not None and not tasks:
            self._drained.set()

    def _closed_on(self, task: asyncio.Task[object], label: str | None) -> None:
        """A cancellation reached a wire operation: ours from ``aclose()``, or another's.

        Ours, with no other pending, ends the call with ``ClientClosedError``
        (``uncancel`` as ``asyncio.timeout`` does); any other goes on as it is.
        """
        if self.is_closed and task.uncancel() == 0:
            raise ClientClosedError(
                "the client was closed while this call was in flight", label=label
            ) from None

    async def aclose(self) -> None:
        """End every send and read in flight, then close the session and its connections."""
        if self._closing:
            return
        self._closing = True
        if self._tasks:
            self._drained = asyncio.Event()
            for task in self._tasks:
                task.cancel()
            try:
                async with asyncio.timeout(_DRAIN_SECONDS):
                    await asyncio.shield(self._drained.wait())
            except TimeoutError:  # pragma: no cover - a task that ignores cancellation
                pass
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())


def client_timeout(timeout: Timeout) -> aiohttp.ClientTimeout:
    """The aiohttp timeouts matching a ``Timeout``.

    ``pool`` and ``connect`` together are aiohttp's ``connect`` (waiting for a pooled
    connection, then opening one); ``connect`` alone is ``sock_connect``; ``read``
    (between two reads, the headers included) is ``sock_read``. There is no total,
    and no write timeout.
    """
    pool = timeout.pool
    connect = timeout.connect
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if pool is None or connect is None else pool + connect,
        sock_connect=connect,
        sock_read=timeout.read,
    )


def translate_aiohttp_error(exc: BaseException, label: str | None) -> WishubError:
    """Our exception for an aiohttp or asyncio one; the message never includes a header."""
    name = type(exc).__name__
    if isinstance(exc, RuntimeError):  # a closed session, a finished response
        return ClientStateError(f"the aiohttp session cannot send: {exc}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"timed out connecting ({name})", label=label)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, ServerTimeoutError, others
        return APITimeoutError(f"timed out waiting for the response ({name})", label=label)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its str() is fine, but it holds the response headers: name only what we need.
        return APIConnectionError(
            f"unreadable response ({name}): {exc.status} {exc.message}", label=label
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(
            f"the connection broke while reading the body ({name}): {_describe(exc)}",
            label=label,
        )
    return APIConnectionError(f"connection failed ({name}): {_describe(exc)}", label=label)


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


class _AiohttpStream:
    """A streamed aiohttp body; each read is abortable and maps its errors."""

    def __init__(
        self, transport: AiohttpTransport, reply: aiohttp.ClientResponse, label: str
    ) -> None:
        self._transport = transport
        self._reply = reply
        self._label = label

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        with self._transport.map_errors(self._label):
            chunk = await self._reply.content.readany()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        with self._transport.map_errors(self._label):
            return await self._reply.read()

    async def aclose(self) -> None:
        # Back to the pool when the body was read to the end; otherwise drop the socket.
        if self._reply.content.at_eof():
            self._reply.release()
        else:
            self._reply.close()
