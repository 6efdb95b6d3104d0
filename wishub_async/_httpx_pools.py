"""The connections of the httpx transport when the client owns them: small pools.

httpcore's connection pool walks all its connections (polling each idle socket)
whenever a request starts or ends, so one pool of N connections costs more per call
the larger N is, and a pool that keeps all of them alive costs the most
(``docs/performance.md``, "The httpx pool"). ``SmallPools`` gives each connection a
pool of its own and spreads calls over them: no pool ever walks far.

``OwnPools`` is the transport of the ``httpx.AsyncClient`` the SDK owns: it sends
each request to the small pools, or through the proxy the environment names. An
``httpx.AsyncClient`` given a transport of its own reads no proxy settings, so
``OwnPools`` reads them itself (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``, as urllib reads them, once per host), and the CA bundle
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``).
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator

import httpx

__all__ = ["OwnPools", "SmallPools"]

KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle connection is kept for the next call."""
_PROXY_KEEPALIVE = 20
"""Idle connections kept to a proxy (one pool: the proxy is one host)."""


class SmallPools(httpx.AsyncBaseTransport):
    """Calls spread over pools of one connection each, made as they are needed.

    A call takes the pool freed last (its connection is the warmest), else a new pool
    while there are fewer than ``max_connections``; past that (only while streams are
    left open), calls queue on the pools in turn. A pool is free again when the
    response's body is closed.
    """

    def __init__(self, max_connections: int, tls: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        # One TLS context for all: building one loads the CA bundle (tens of ms).
        self._tls = httpx.create_ssl_context() if tls is None else tls
        self._limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        self._pools: list[httpx.AsyncHTTPTransport] = []
        self._calls: list[int] = []  # calls holding each pool
        self._free: list[int] = []  # pools holding no call, the last freed at the end
        self._turn = 0
        self._give_back(self._add())  # the first now: it imports httpcore (once, slowly)

    @property
    def pools(self) -> int:
        """How many pools (so connections at most) exist now."""
        return len(self._pools)

    def _add(self) -> int:
        self._pools.append(httpx.AsyncHTTPTransport(verify=self._tls, limits=self._limits))
        self._calls.append(1)
        return len(self._pools) - 1

    def _take(self) -> int:
        if self._free:
            index = self._free.pop()
        elif len(self._pools) < self.max_connections:
            return self._add()
        else:
            index = self._turn = (self._turn + 1) % len(self._pools)
        self._calls[index] += 1
        return index

    def _give_back(self, index: int) -> None:
        self._calls[index] -= 1
        if not self._calls[index]:
            self._free.append(index)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._take()
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._give_back(index)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # noqa: S101 - httpx's async transport
        response.stream = _Held(response.stream, self, index)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Held(httpx.AsyncByteStream):
    """A response body that gives its pool back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, pools: SmallPools, index: int) -> None:
        self._stream = stream
        self._pools: SmallPools | None = pools
        self._index = index

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            pools, self._pools = self._pools, None  # given back once, however often closed
            if pools is not None:
                pools._give_back(self._index)  # noqa: SLF001 - its own pools' bookkeeping


class OwnPools(httpx.AsyncBaseTransport):
    """Sends to small pools, or through the proxy the environment names."""

    def __init__(self, max_connections: int) -> None:
        self.is_closed = False
        self._max_connections = max_connections
        self._tls = httpx.create_ssl_context()  # SSL_CERT_FILE / SSL_CERT_DIR honoured
        self._direct = SmallPools(max_connections, self._tls)
        self._routes: dict[tuple[bytes, bytes], httpx.AsyncBaseTransport] = {}  # by origin
        self._proxies: dict[str, httpx.AsyncHTTPTransport] = {}  # by proxy URL

    @property
    def small_pools(self) -> SmallPools:
        """The pools of calls sent straight to their host."""
        return self._direct

    def route(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """Where a call to ``url`` goes: its proxy's pool, or the small pools."""
        origin = (url.raw_scheme, url.netloc)
        route = self._routes.get(origin)
        if route is None:
            route = self._routes[origin] = self._find_route(url.scheme, url.netloc.decode())
        return route

    def _find_route(self, scheme: str, netloc: str) -> httpx.AsyncBaseTransport:
        proxies = urllib.request.getproxies()
        proxy = proxies.get(scheme) or proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(netloc):
            return self._direct
        through = self._proxies.get(proxy)
        if through is None:
            limits = httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=min(self._max_connections, _PROXY_KEEPALIVE),
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            through = self._proxies[proxy] = httpx.AsyncHTTPTransport(
                proxy=proxy, verify=self._tls, limits=limits
            )
        return through

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request on the route of its origin."""
        return await self.route(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        """Close every pool (and every connection in them)."""
        self.is_closed = True
        await self._direct.aclose()
        for through in self._proxies.values():
            await through.aclose()
