"""The default transport: httpx behind our ``Transport``.

It sends through one ``httpx.AsyncClient``: its own, on small pools
(``_httpx_pools``), with no redirects followed and no cookies kept; or the caller's
(``http_client=``), whose settings (hooks, auth, mounts) then apply and which is never
closed by us.

``map_httpx_errors`` is the one place where httpx's exceptions become ours; it wraps
the send, the body read and every stream read. Each of those also runs in a cancel
scope that ``aclose()`` cancels, so closing the client ends every call in flight
with ``ClientClosedError`` instead of letting it finish (or open a new connection)
after the pool is gone.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import anyio
import anyio.lowlevel
import httpx

from ._httpx_pools import OwnPools
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

__all__ = ["HttpxTransport", "map_httpx_errors", "translate_httpx_error"]

_MAX_CAUSES = 8
_UNWIND_READS = 64
_TIMEOUT_PHASES = {
    "ConnectTimeout": "connecting",
    "ReadTimeout": "waiting for the response",
    "WriteTimeout": "sending the request",
    "PoolTimeout": "waiting for a free connection",
}


def translate_httpx_error(exc: httpx.HTTPError, label: str | None) -> WishubError:
    """Our exception for an httpx one; the message never includes a header value."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        what = _TIMEOUT_PHASES.get(name, "the request")
        return APITimeoutError(f"timed out {what} ({name})", label=label)
    detail = _first_message(exc) or name
    if isinstance(exc, httpx.DecodingError):
        return APIConnectionError(f"could not decode the response body: {detail}", label=label)
    return APIConnectionError(f"connection failed ({name}): {detail}", label=label)


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


class _Client:
    """Sends on an ``httpx.AsyncClient``: our own (closed with us) or the caller's."""

    def __init__(self, client: httpx.AsyncClient, pools: OwnPools | None = None) -> None:
        self.client = client
        self.pools = pools  # the transport we gave our own client; None on the caller's
        self._timeouts: dict[Timeout, httpx.Timeout] = {}

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: Timeout,
        *,
        stream: bool,
    ) -> httpx.Response:
        phases = self._timeouts.get(timeout)
        if phases is None:
            phases = self._timeouts[timeout] = httpx.Timeout(
                connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
            )
        built = self.client.build_request(
            method, url, headers=headers, content=content, timeout=phases
        )
        return await self.client.send(built, stream=stream)

    async def aclose(self) -> None:
        if self.pools is not None:  # a caller's client is the caller's to close
            await self.client.aclose()


class HttpxTransport:
    """Sends through an ``httpx.AsyncClient``: its own on small pools, or the caller's."""

    def __init__(self, sender: _Client) -> None:
        self._sender = sender
        self._closing = False
        self._scopes: set[anyio.CancelScope] = set()
        self._drained: anyio.Event | None = None
        self._token: object = None

    @classmethod
    def owned(cls, max_connections: int) -> HttpxTransport:
        """A transport with a client of its own: up to ``max_connections`` connections."""
        # No cookie is ever stored: one key's gateway cookie must not ride along with
        # another key's calls. The environment's proxies and CA bundle are read by
        # OwnPools (a client given a transport reads neither).
        no_cookies = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        pools = OwnPools(max_connections)
        client = httpx.AsyncClient(
            transport=pools,
            follow_redirects=False,
            trust_env=False,
            cookies=http.cookiejar.CookieJar(no_cookies),
        )
        return cls(_Client(client, pools))

    @classmethod
    def of_caller(cls, client: object) -> HttpxTransport:
        """A transport on the caller's ``httpx.AsyncClient`` (never closed by us)."""
        if not isinstance(client, httpx.AsyncClient):
            raise ConfigurationError(
                f"http_client= takes an httpx.AsyncClient, not {type(client).__name__}"
            )
        return cls(_Client(client))

    @property
    def owned_pools(self) -> OwnPools | None:
        """The pools this transport owns (None on a caller's client)."""
        return self._sender.pools

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<HttpxTransport {state} owned={self.owned_pools is not None}>"

    async def send(self, request: WireRequest) -> WireResponse:
        """Send one attempt (see ``Transport.send``)."""
        if self._token is None:  # the loop of the first send: connections belong to it
            self._token = anyio.lowlevel.current_token().native_token
        with self.map_errors(request.label):
            reply = await self._sender.send(
                request.method,
                request.url,
                request.headers,
                request.content,
                request.timeout,
                stream=request.stream,
            )
        if request.stream:
            return WireResponse(
                reply.status_code, reply.headers, stream=_HttpxStream(self, reply, request.label)
            )
        return WireResponse(reply.status_code, reply.headers, reply.content)

    @contextmanager
    def map_errors(self, label: str | None) -> Iterator[None]:
        """Run a wire operation: abortable by ``aclose()``, httpx errors made ours."""
        if self._closing:
            raise ClientClosedError("the client is closed", label=label)
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope, map_httpx_errors(self, label):
                yield
        finally:
            self._scopes.discard(scope)
            if self._drained is not None and not self._scopes:
                self._drained.set()
        if scope.cancelled_caught:
            raise ClientClosedError(
                "the client was closed while this call was in flight", label=label
            )

    def check_loop(self) -> None:
        """Raise ``ClientStateError`` if the pool was first used in another event loop."""
        if anyio.lowlevel.current_token().native_token is not self._token:
            raise ClientStateError(
                "this AsyncWishub was first used in another event loop; its connections"
                " belong to that loop (create one client per event loop)",
            ) from None

    @property
    def is_closed(self) -> bool:
        """Whether this transport, or the caller's client, is closed."""
        return self._closing or self._sender.is_closed

    async def aclose(self) -> None:
        """End every send and read in flight, then close the pools if they are ours."""
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._scopes:
                self._drained = anyio.Event()
                for scope in list(self._scopes):
                    scope.cancel()
                with anyio.move_on_after(5):
                    await self._drained.wait()
            await self._sender.aclose()


@contextmanager
def map_httpx_errors(transport: HttpxTransport, label: str | None) -> Iterator[None]:
    """Turn what httpx raises into our exceptions (``raise ... from exc``)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise translate_httpx_error(exc, label) from exc
    except RuntimeError as exc:
        # httpx raises RuntimeError for a closed client; httpcore and anyio for a pool
        # used from another event loop. Neither is a connection problem to retry.
        if transport.is_closed:
            raise ClientStateError(
                "the http_client given to AsyncWishub is closed; it belongs to the caller"
            ) from exc
        transport.check_loop()
        raise ClientStateError(f"the HTTP client cannot send here: {exc}") from exc


class _HttpxStream:
    """A streamed httpx body; each read is abortable and maps its errors."""

    def __init__(self, transport: HttpxTransport, reply: httpx.Response, label: str) -> None:
        self._transport = transport
        self._reply = reply
        self._label = label
        self._chunks = reply.aiter_bytes()

    def __aiter__(self) -> _HttpxStream:
        return self

    async def __anext__(self) -> bytes:
        with self._transport.map_errors(self._label):
            return await anext(self._chunks)

    async def read(self) -> bytes:
        with self._transport.map_errors(self._label):
            return await self._reply.aread()

    async def aclose(self) -> None:
        try:
            with map_httpx_errors(self._transport, self._label):
                await self._reply.aclose()
        except WishubError:
            pass  # closing a broken or aborted connection: nothing left to release
        await _unwind(self._chunks)


async def _unwind(chunks: AsyncIterator[bytes]) -> None:
    """Finish a body's async-generator chain left suspended by an early close.

    Closing the outer generator would leave the inner ones (httpx's, httpcore's)
    suspended, and trio warns about each when it is garbage collected. One read in an
    already-cancelled scope makes the cancellation travel through every frame
    instead, so each one finishes. The response is closed by then: at most what was
    already buffered is read, and dropped.
    """
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            for _ in range(_UNWIND_READS):  # buffered data comes without a checkpoint
                if await anext(chunks, None) is None:
                    break
        except Exception:  # noqa: BLE001, S110 - the body is closed; any error here is moot
            pass
