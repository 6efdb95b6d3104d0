"""``AsyncWishub``: the client, its lifecycle, its views, and the request pipeline."""

from __future__ import annotations

import enum
import http.cookiejar
import ipaddress
import json
import os
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import anyio
import attrs
import httpx

from . import _fanout
from ._chat import Chat
from ._errors import api_error
from ._events import Hooks
from ._keys import AppKey, KeyRing, KeyStatus, load_keys
from ._resources import Embeddings, Models
from ._retry import CallRecord, RetryPolicy, send_with_retries
from ._transport import Handler, HttpxTransport, Middleware, Request, Response, Transport
from .exceptions import ClientStateError, ConfigurationError
from .models import ModelList

if TYPE_CHECKING:
    from ._fanout import OutcomeList

__all__ = ["DEFAULT_BASE_URL", "AsyncWishub"]

DEFAULT_BASE_URL = "https://wishub-x1.ctyun.cn/v1"
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Reasoning models answering without streaming can take many minutes."""
DEFAULT_MAX_CONCURRENCY = 100
HTTPX_KEEPALIVE = 20
"""Idle connections the httpx pool keeps. Measured, not guessed: httpcore 1.0's pool
walks every connection (and polls each idle socket) on every request start and end,
so a pool that keeps all ``max_concurrency`` connections costs more per request than
it saves: 200 keys x 5 calls at concurrency 100 took 17 s with 100 kept alive and
2.4 s with 20 (``benchmarks/fanout.py``). For high concurrency with connections kept
alive, use ``backend="aiohttp"`` (0.24 s there)."""

T = TypeVar("T")
ItemT = TypeVar("ItemT")
Backend = Literal["httpx", "aiohttp"]
_UNCHANGED: Any = object()


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _Shared:
    """What every view of one client shares: pool, keys, limits and lifecycle."""

    def __init__(
        self, transport: Transport, ring: KeyRing, max_concurrency: int, *, owned: bool
    ) -> None:
        self.transport = transport
        self.ring = ring
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.max_concurrency = max_concurrency
        self.owned = owned
        self.state = _State.UNOPENED
        self.entered = False  # `async with` (a first request also opens, implicitly)

    def __del__(self) -> None:
        if self.state is _State.OPEN and self.owned:
            warnings.warn(
                "AsyncWishub was garbage collected while open; use `async with` or "
                "`await client.aclose()` to close its connections",
                ResourceWarning,
                stacklevel=2,
            )


@attrs.frozen
class _Options:
    """Per-view options; ``with_options`` evolves them."""

    base_url: str
    timeout: httpx.Timeout
    retry: RetryPolicy
    headers: Mapping[str, str]
    middleware: tuple[Middleware, ...]
    allow_http: bool
    hooks: Hooks
    probe: bool = False  # check_keys(): use pinned keys even if quarantined or cooling


class AsyncWishub:
    """Async client for the wishub API; one pooled connection set for all AppKeys.

    Use it as an async context manager (or call ``aclose()``):

        async with AsyncWishub(app_key="...") as wh:
            models = await wh.models.list()

    Args:
        app_key: the AppKey; defaults to the ``WISHUB_APP_KEY`` environment variable.
        app_keys: several AppKeys instead, as a list (labelled ``key-0``, ``key-1``…)
            or a ``{label: key}`` dict.
        base_url: the API root; defaults to ``WISHUB_BASE_URL``, else
            ``https://wishub-x1.ctyun.cn/v1``.
        timeout: an ``httpx.Timeout`` or seconds; default 600 s, 10 s to connect.
        retry: the ``RetryPolicy``; default 3 attempts with exponential backoff.
        max_concurrency: requests in flight at once, over all keys (default 100).
        per_key_concurrency: requests in flight at once per key (default: no limit).
        middleware: ``async def mw(request, call_next)`` callables, outermost first.
        http_client: your own ``httpx.AsyncClient``; used, never closed by us.
        backend: ``"httpx"`` (default) or ``"aiohttp"`` (asyncio only; needs the
            ``wishub-async[aiohttp]`` extra).
        headers: extra headers for every request.
        hooks: observability callbacks (``Hooks``) for request ends, retries and
            key state changes.
        allow_http: allow plain ``http://`` to a non-loopback host (keys travel in clear).

    Raises:
        ConfigurationError: a key is missing or malformed, or the URL is unsafe.
    """

    def __init__(
        self,
        app_key: str | None = None,
        *,
        app_keys: Sequence[str] | Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        per_key_concurrency: int | None = None,
        middleware: Sequence[Middleware] = (),
        http_client: httpx.AsyncClient | None = None,
        backend: Backend = "httpx",
        headers: Mapping[str, str] | None = None,
        hooks: Hooks | None = None,
        allow_http: bool = False,
    ) -> None:
        ring = KeyRing(load_keys(app_key, app_keys), per_key_concurrency=per_key_concurrency)
        if max_concurrency < 1 or (per_key_concurrency is not None and per_key_concurrency < 1):
            raise ConfigurationError("max_concurrency and per_key_concurrency must be >= 1")
        options = _make_options(
            base_url=base_url or os.environ.get("WISHUB_BASE_URL") or DEFAULT_BASE_URL,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            headers=headers or {},
            middleware=tuple(middleware),
            allow_http=allow_http,
            hooks=hooks or Hooks(),
        )
        transport = _make_transport(backend, http_client, max_concurrency)
        shared = _Shared(transport, ring, max_concurrency, owned=http_client is None)
        self._init_view(shared, options, None, None, owner=True)

    def _init_view(
        self,
        shared: _Shared,
        options: _Options,
        pinned: AppKey | None,
        record: CallRecord | None,
        *,
        owner: bool,
    ) -> None:
        self._shared = shared
        self._options = options
        self._pinned = pinned
        self._record = record
        self._owner = owner
        self._base_headers = {
            "accept": "application/json",
            "user-agent": f"wishub-async/{_version()}",
            **{name.lower(): value for name, value in options.headers.items()},
        }
        handler: Handler = self._send
        for middleware in reversed(options.middleware):
            handler = _bind(middleware, handler)
        self._handler = handler
        self.models = Models(self._call)
        self.chat = Chat(self._call, options.retry.error_table)
        self.embeddings = Embeddings(self._call, options.retry.error_table)

    def _view(self, options: _Options, pinned: AppKey | None, record: CallRecord | None) -> Self:
        view = object.__new__(type(self))
        view._init_view(self._shared, options, pinned, record, owner=False)
        return view

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if not self._owner:
            raise ClientStateError(
                "a view from with_key()/with_options() shares its parent's pool:"
                " open and close the parent instead"
            )
        if self._shared.state is _State.CLOSED:
            raise ClientStateError("this AsyncWishub is closed; create a new one")
        if self._shared.entered:
            raise ClientStateError("this AsyncWishub is already open in an `async with`")
        self._shared.entered = True
        self._shared.state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (if we created it). Safe to call twice.

        Views from ``with_key`` / ``with_options`` do not own the pool: on a view this
        does nothing; close the parent.
        """
        if not self._owner or self._shared.state is _State.CLOSED:
            return
        self._shared.state = _State.CLOSED
        with anyio.CancelScope(shield=True):
            await self._shared.transport.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` has been called on this client (or its parent)."""
        return self._shared.state is _State.CLOSED

    def __repr__(self) -> str:
        keys = self._shared.ring.keys
        bound = f" key={self._pinned.label}" if self._pinned else f" keys={len(keys)}"
        return (
            f"<AsyncWishub {self._shared.state.value} base_url={self._options.base_url!r}{bound}>"
        )

    # -- views and keys ----------------------------------------------------------

    def with_options(
        self,
        *,
        base_url: str = _UNCHANGED,
        timeout: httpx.Timeout | float = _UNCHANGED,
        retry: RetryPolicy = _UNCHANGED,
        headers: Mapping[str, str] = _UNCHANGED,
        middleware: Sequence[Middleware] = _UNCHANGED,
        hooks: Hooks = _UNCHANGED,
        allow_http: bool = _UNCHANGED,
    ) -> Self:
        """A view with some options changed, sharing this client's pool and keys.

        Each option replaces the current one, except ``headers``, which are merged over
        the current headers (as OpenAI's ``with_options`` does).
        """
        current = self._options
        options = _make_options(
            base_url=current.base_url if base_url is _UNCHANGED else base_url,
            timeout=current.timeout if timeout is _UNCHANGED else timeout,
            retry=current.retry if retry is _UNCHANGED else retry,
            headers=current.headers if headers is _UNCHANGED else {**current.headers, **headers},
            middleware=current.middleware if middleware is _UNCHANGED else tuple(middleware),
            allow_http=current.allow_http if allow_http is _UNCHANGED else allow_http,
            hooks=current.hooks if hooks is _UNCHANGED else hooks,
        )
        return self._view(options, self._pinned, self._record)

    def with_key(self, label: str) -> Self:
        """A view whose requests all use the key with this label (same pool)."""
        return self._view(self._options, self._shared.ring.get(label), self._record)

    @property
    def key_labels(self) -> list[str]:
        """Every key's label, in the order given."""
        return self._shared.ring.labels

    def key_status(self) -> list[KeyStatus]:
        """A health snapshot per key: label, redacted id, state, counts. Never the key."""
        return self._shared.ring.status()

    async def check_keys(self) -> OutcomeList[ModelList]:
        """Probe every key with ``GET /models``; keys that work leave quarantine.

        Quarantined and cooling keys are probed too; a key that fails the probe gets
        the health its error prescribes.
        """
        probing = self._view(attrs.evolve(self._options, probe=True), None, None)
        return await _fanout.fan_out(probing, _list_models, keys=None)

    async def fan_out(
        self,
        fn: Callable[[Self], Awaitable[T]],
        *,
        keys: Iterable[str] | None = None,
    ) -> OutcomeList[T]:
        """Run ``fn(view)`` once per key, concurrently; one ``Outcome`` per key.

        A failed key does not raise: its outcome holds the error. Call
        ``raise_for_errors()`` on the result to raise them as an ``ExceptionGroup``.
        """
        return await _fanout.fan_out(self, fn, keys=keys)

    async def map(
        self, fn: Callable[[Self, ItemT], Awaitable[T]], items: Iterable[ItemT]
    ) -> OutcomeList[T]:
        """Run ``fn(view, item)`` for each item, spread over the healthy keys.

        Results come back in input order, one ``Outcome`` per item. A key-scoped
        failure (auth, quota, rate limit) moves the call to another key.
        """
        return await _fanout.map_items(self, fn, items)

    def map_as_completed(
        self, fn: Callable[[Self, ItemT], Awaitable[T]], items: Iterable[ItemT]
    ) -> AbstractAsyncContextManager[_fanout.OutcomeStream[T]]:
        """Like ``map``, but hand out each ``Outcome`` as soon as it completes.

        Use it as an async context manager:

            async with wh.map_as_completed(ask, questions) as outcomes:
                async for outcome in outcomes:
                    print(outcome.index, outcome.value)

        Leaving the block early cancels the calls still running.
        """
        return _fanout.map_as_completed(self, fn, items)

    def _tracked(self, label: str | None) -> tuple[Self, CallRecord]:
        """A view that records its calls' attempts, bound to ``label`` if given."""
        record = CallRecord()
        pinned = None if label is None else self._shared.ring.get(label)
        return self._view(self._options, pinned, record), record

    # -- the pipeline ------------------------------------------------------------

    async def _call(self, request: Request) -> Response:
        state = self._shared.state
        if state is not _State.OPEN:
            if state is _State.CLOSED:
                raise ClientStateError("this AsyncWishub is closed; create a new one")
            self._shared.state = _State.OPEN
        return await self._handler(request)

    async def _send(self, request: Request) -> Response:
        options = self._options
        content = (
            None
            if request.json is None
            else json.dumps(request.json, ensure_ascii=False, separators=(",", ":")).encode()
        )
        url = options.base_url + request.path
        table = options.retry.error_table
        # Lower-cased so that no header goes out twice under two spellings; the key's
        # Authorization is set per attempt below and wins over any a middleware set.
        headers = {**self._base_headers, **{k.lower(): v for k, v in request.headers.items()}}
        if content is not None:
            headers["content-type"] = "application/json"

        async def attempt(request: Request, key: AppKey) -> Response:
            if self._shared.state is _State.CLOSED:  # aclose() ran while this call waited
                raise ClientStateError("this AsyncWishub was closed while the call was in flight")
            headers["authorization"] = key.authorization
            response = await self._shared.transport.send(
                request.method,
                url,
                headers,
                content,
                timeout=options.timeout,
                stream=request.stream,
                key=key.label,
            )
            response.scrub = key.scrub
            if 200 <= response.status_code < 300:  # noqa: PLR2004 - the 2xx family
                if request.check is not None:
                    await request.check(response)
                return response
            body = key.scrub(await response.aread())
            raise api_error(
                response.status_code, response.headers, body, key=key.label, table=table
            )

        return await send_with_retries(
            request,
            attempt,
            ring=self._shared.ring,
            pinned=self._pinned,
            policy=options.retry,
            limiter=self._shared.limiter,
            record=self._record if self._record is not None else CallRecord(),
            hooks=options.hooks,
            probe=options.probe,
        )


async def _list_models(client: AsyncWishub) -> ModelList:
    return await client.models.list()


def _bind(middleware: Middleware, call_next: Handler) -> Handler:
    async def handler(request: Request) -> Response:
        return await middleware(request, call_next)

    return handler


def _make_options(
    *,
    base_url: str,
    timeout: httpx.Timeout | float | None,
    retry: RetryPolicy,
    headers: Mapping[str, str],
    middleware: tuple[Middleware, ...],
    allow_http: bool,
    hooks: Hooks,
) -> _Options:
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry= takes a RetryPolicy, not {type(retry).__name__}")
    for name, value in headers.items():
        if name.lower() == "authorization":
            raise ConfigurationError(
                "set keys with app_key=/app_keys=, not an Authorization header"
            )
        if not _is_header_safe(name) or not _is_header_safe(value, allow_space=True):
            raise ConfigurationError(f"header {name!r} has control or non-ASCII characters")
    return _Options(
        base_url=_check_base_url(base_url, allow_http),
        timeout=(
            DEFAULT_TIMEOUT
            if timeout is None
            else timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout)
        ),
        retry=retry,
        headers=dict(headers),
        middleware=middleware,
        allow_http=allow_http,
        hooks=hooks,
    )


def _is_header_safe(text: str, *, allow_space: bool = False) -> bool:
    low = 0x20 if allow_space else 0x21
    return bool(text) and all(low <= ord(char) <= 0x7E for char in text)  # noqa: PLR2004


def _check_base_url(base_url: str, allow_http: bool) -> str:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"base_url {base_url!r} is not a valid URL") from exc
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if url.scheme == "http" and not allow_http and not _is_loopback(url.host):
        raise ConfigurationError(
            f"refusing to send AppKeys over plain http to {url.host}; use https,"
            " or pass allow_http=True if you really mean it"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _make_transport(
    backend: Backend, http_client: httpx.AsyncClient | None, max_concurrency: int
) -> Transport:
    if backend == "aiohttp":
        if http_client is not None:
            raise ConfigurationError("http_client= is an httpx client; it needs backend='httpx'")
        try:
            from ._aiohttp import AiohttpTransport  # noqa: PLC0415 - optional extra
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.partition(".")[0] != "aiohttp":
                raise
            raise ConfigurationError(
                "backend='aiohttp' needs aiohttp: pip install 'wishub-async[aiohttp]'"
            ) from exc
        return AiohttpTransport(max_connections=max_concurrency)
    if backend != "httpx":
        raise ConfigurationError(f"backend must be 'httpx' or 'aiohttp', not {backend!r}")
    if http_client is not None:
        return HttpxTransport(http_client, owned=False)
    limits = httpx.Limits(
        max_connections=max_concurrency,
        max_keepalive_connections=min(max_concurrency, HTTPX_KEEPALIVE),
        keepalive_expiry=30.0,
    )
    # No cookie ever stored: one key's gateway cookie must not ride along with another's.
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    client = httpx.AsyncClient(
        limits=limits, follow_redirects=False, trust_env=True, cookies=no_cookies
    )
    return HttpxTransport(client, owned=True)


def _version() -> str:
    from . import __version__  # noqa: PLC0415 - the package imports this module first

    return __version__
