"""``AsyncWishub``: the client, its lifecycle, its options and its views."""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import anyio
import attrs

from . import _fanout
from ._chat import Chat
from ._errors import DEFAULT_ERROR_TABLE, ErrorTable
from ._events import Hooks
from ._http import Handler, Middleware, Request, Response
from ._httpx import HttpxTransport, new_httpx_client
from ._keys import AppKey, KeyPolicy, KeyRing, KeyStatus, load_keys
from ._pipeline import (
    JSON,
    CallRecord,
    Expect,
    Lifecycle,
    LifeState,
    Pipeline,
    Send,
    Settings,
    Shared,
)
from ._resources import Embeddings, Models
from ._retry import RetryPolicy
from ._timeout import Timeout
from ._version import __version__
from ._wire import Transport
from .exceptions import ClientStateError, ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    import httpx

    from ._fanout import OutcomeList, OutcomeStream
    from .models import ModelList

__all__ = ["DEFAULT_BASE_URL", "AsyncWishub"]

DEFAULT_BASE_URL = "https://wishub-x1.ctyun.cn/v1"
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


class _Unchanged(enum.Enum):
    """The typed default of ``with_options``: keep the current value."""

    UNCHANGED = "unchanged"


UNCHANGED = _Unchanged.UNCHANGED


def _type_check(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigurationError(f"{name}= takes a {names}, not {type(value).__name__}")


@attrs.frozen
class _Options:
    """A view's options, checked once; ``with_options`` evolves them."""

    base_url: str
    timeout: Timeout
    retry: RetryPolicy
    headers: Mapping[str, str]
    middleware: tuple[Middleware, ...]
    hooks: Hooks
    error_table: ErrorTable
    allow_http: bool

    @classmethod
    def checked(
        cls,
        *,
        base_url: object,
        timeout: object,
        retry: object,
        headers: object,
        middleware: object,
        hooks: object,
        error_table: object,
        allow_http: object,
    ) -> _Options:
        """The options, or ``ConfigurationError`` naming the first one that is wrong."""
        _type_check("allow_http", allow_http, bool)
        _type_check("retry", retry, RetryPolicy)
        _type_check("hooks", hooks, Hooks)
        _type_check("error_table", error_table, ErrorTable)
        if not isinstance(middleware, Iterable) or not all(map(callable, middleware)):
            raise ConfigurationError("middleware= takes a list of async callables")
        return cls(
            base_url=_check_base_url(base_url, allow_http=bool(allow_http)),
            timeout=Timeout.coerce(timeout),
            retry=retry,  # type: ignore[arg-type]  # checked above
            headers=_check_headers(headers),
            middleware=tuple(middleware),
            hooks=hooks,  # type: ignore[arg-type]
            error_table=error_table,  # type: ignore[arg-type]
            allow_http=bool(allow_http),
        )

    def settings(self) -> Settings:
        """What the pipeline sends with."""
        parts = urllib.parse.urlsplit(self.base_url)
        headers = {
            "accept": "application/json",
            "user-agent": f"wishub-async/{__version__}",
            **{name.lower(): value for name, value in self.headers.items()},
        }
        return Settings(
            base_url=self.base_url,
            root_url=f"{parts.scheme}://{parts.netloc}",
            timeout=self.timeout,
            retry=self.retry,
            error_table=self.error_table,
            headers=headers,
            hooks=self.hooks,
        )


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
        timeout: a ``Timeout`` (or ``httpx.Timeout``), or seconds for every phase;
            default 600 s, 10 s to connect.
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
        error_table: the ``ErrorTable`` deciding each error's class, retry and key
            effect (default ``DEFAULT_ERROR_TABLE``).
        key_policy: the ``KeyPolicy``: how keys rest after errors, how often a call
            moves between keys.

    Raises:
        ConfigurationError: an option is missing or malformed (a key, a timeout,
            the URL...); nothing is opened then.
    """

    _shared: Shared
    _options: _Options
    _pinned: AppKey | None
    _pipeline: Pipeline
    _send: Send

    def __init__(
        self,
        app_key: str | None = None,
        *,
        app_keys: Sequence[str] | Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: Timeout | float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        per_key_concurrency: int | None = None,
        middleware: Sequence[Middleware] = (),
        http_client: httpx.AsyncClient | None = None,
        backend: Backend = "httpx",
        headers: Mapping[str, str] | None = None,
        hooks: Hooks | None = None,
        allow_http: bool = False,
        error_table: ErrorTable | None = None,
        key_policy: KeyPolicy | None = None,
    ) -> None:
        # Everything is checked before anything is opened: a constructor that fails
        # leaves nothing behind to warn about.
        options = _Options.checked(
            base_url=base_url or os.environ.get("WISHUB_BASE_URL") or DEFAULT_BASE_URL,
            timeout=timeout,
            retry=RetryPolicy() if retry is None else retry,
            headers={} if headers is None else headers,
            middleware=middleware,
            hooks=Hooks() if hooks is None else hooks,
            error_table=DEFAULT_ERROR_TABLE if error_table is None else error_table,
            allow_http=allow_http,
        )
        _check_count("max_concurrency", max_concurrency)
        if per_key_concurrency is not None:
            _check_count("per_key_concurrency", per_key_concurrency)
        key_policy = KeyPolicy() if key_policy is None else key_policy
        _type_check("key_policy", key_policy, KeyPolicy)
        ring = KeyRing(
            load_keys(app_key, app_keys),
            per_key_concurrency=per_key_concurrency,
            policy=key_policy,
        )
        transport = _make_transport(backend, http_client, max_concurrency)
        shared = Shared(
            transport=transport,
            ring=ring,
            limiter=anyio.CapacityLimiter(max_concurrency),
            lifecycle=Lifecycle(),
            max_concurrency=max_concurrency,
            owned=http_client is None,
        )
        self._bind(shared, options, None)

    def _bind(
        self,
        shared: Shared,
        options: _Options,
        pinned: AppKey | None,
        *,
        record: CallRecord | None = None,
        probe: bool = False,
    ) -> None:
        """Wire this client (or view) to its shared pool and its own options."""
        self._shared = shared
        self._options = options
        self._pinned = pinned
        self._pipeline = Pipeline(shared, options.settings(), pinned, probe=probe, record=record)
        send: Send = self._pipeline.send
        self._send = _Chain(send, options.middleware) if options.middleware else send

    # -- resources -------------------------------------------------------------------

    @cached_property
    def models(self) -> Models:
        """``wh.models``: the models the AppKey may call."""
        return Models(self._send)

    @cached_property
    def chat(self) -> Chat:
        """``wh.chat``: chat completions, whole or streamed."""
        return Chat(self._send, self._options.error_table)

    @cached_property
    def embeddings(self) -> Embeddings:
        """``wh.embeddings``: vectors for texts or token lists."""
        return Embeddings(self._send)

    async def request(
        self, method: str, path: str, *, json: Any = None, model: str | None = None
    ) -> Response:
        """Send one call as it is, for a route the SDK has no method for; its ``Response``.

        The call goes through the middleware, the key choice and the retries like any
        other, and the answer is settled (2xx, body read, an echoed key redacted);
        errors raise as usual. Parse ``response.content`` yourself.

            response = await wh.request("POST", "/embeddings", json=body)

        Args:
            method: the HTTP method, such as ``"POST"``.
            path: the path below the base URL, such as ``"/chat/completions"``.
            json: the JSON body, or None.
            model: the model the call names; by default the body's ``"model"``.
                Per-model key health (and rate budgets) follow it.

        Raises:
            InvalidRequestError: ``path`` does not start with ``/``, or the body is
                not JSON; nothing was sent.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidRequestError(f"path must start with '/', got {path!r}")
        if model is None and isinstance(json, Mapping) and isinstance(json.get("model"), str):
            model = json["model"]
        return await self._send(Request(method, path, json=json, model=model))

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        lifecycle = self._shared.lifecycle
        if lifecycle.state is LifeState.CLOSED:
            raise ClientStateError("this AsyncWishub is closed; create a new one")
        if lifecycle.entered:
            raise ClientStateError("this AsyncWishub is already open in an `async with`")
        lifecycle.entered = True
        lifecycle.state = LifeState.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: end every call in flight, then close the pool.

        Calls still in flight, and streams still being read, end at once with
        ``ClientClosedError``; calls made afterwards raise ``ClientStateError``. The
        pool is closed only if we created it (never a caller's ``http_client``). Safe
        to call twice. On a view from ``with_key`` / ``with_options`` this does
        nothing: close the parent.
        """
        lifecycle = self._shared.lifecycle
        if lifecycle.state is LifeState.CLOSED:
            return
        lifecycle.state = LifeState.CLOSED
        with anyio.CancelScope(shield=True):
            await self._shared.transport.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` has been called on this client (or its parent)."""
        return self._shared.lifecycle.state is LifeState.CLOSED

    def __del__(self) -> None:
        shared = getattr(self, "_shared", None)  # None: the constructor failed
        if shared is not None and shared.owned and shared.lifecycle.state is LifeState.OPEN:
            warnings.warn(
                "AsyncWishub was garbage collected while open; use `async with` or "
                "`await client.aclose()` to close its connections",
                ResourceWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        state = self._shared.lifecycle.state.value
        pinned = self._pinned
        bound = f" key={pinned.label}" if pinned else f" keys={len(self._shared.ring.keys)}"
        return f"<AsyncWishub {state} base_url={self._options.base_url!r}{bound}>"

    # -- views and keys --------------------------------------------------------------

    def with_options(
        self,
        *,
        base_url: str | _Unchanged = UNCHANGED,
        timeout: Timeout | float | httpx.Timeout | _Unchanged = UNCHANGED,
        retry: RetryPolicy | _Unchanged = UNCHANGED,
        headers: Mapping[str, str] | _Unchanged = UNCHANGED,
        middleware: Sequence[Middleware] | _Unchanged = UNCHANGED,
        hooks: Hooks | _Unchanged = UNCHANGED,
        allow_http: bool | _Unchanged = UNCHANGED,
        error_table: ErrorTable | _Unchanged = UNCHANGED,
    ) -> AsyncWishub:
        """A view with some options changed, sharing this client's pool and keys.

        Each option replaces the current one, except ``headers``, which are merged over
        the current headers (as OpenAI's ``with_options`` does). The view keeps this
        client's key pin, if any.
        """
        current = self._options
        options = _Options.checked(
            base_url=current.base_url if base_url is UNCHANGED else base_url,
            timeout=current.timeout if timeout is UNCHANGED else timeout,
            retry=current.retry if retry is UNCHANGED else retry,
            headers=current.headers
            if headers is UNCHANGED
            else {**current.headers, **_check_headers(headers)},
            middleware=current.middleware if middleware is UNCHANGED else middleware,
            hooks=current.hooks if hooks is UNCHANGED else hooks,
            error_table=current.error_table if error_table is UNCHANGED else error_table,
            allow_http=current.allow_http if allow_http is UNCHANGED else allow_http,
        )
        return _View(self._shared, options, self._pinned)

    def with_key(self, label: str) -> AsyncWishub:
        """A view whose requests all use the key with this label (same pool).

        On a view already pinned to a key, only that key's own label is accepted.
        """
        if self._pinned is not None and label != self._pinned.label:
            raise ConfigurationError(
                f"this view is pinned to key {self._pinned.label!r}; it cannot use {label!r}"
            )
        return _View(self._shared, self._options, self._shared.ring.get(label))

    @property
    def key_labels(self) -> list[str]:
        """The labels of the keys this client (or view) may use, in the order given."""
        if self._pinned is not None:
            return [self._pinned.label]
        return self._shared.ring.labels

    def key_status(self) -> list[KeyStatus]:
        """A health snapshot per key this client (or view) may use. Never the key."""
        ring = self._shared.ring
        return ring.status(None if self._pinned is None else [self._pinned])

    async def check_keys(self) -> OutcomeList[ModelList]:
        """Probe each key with ``GET /models``; keys that work leave quarantine.

        Every key of the client, or on a ``with_key`` view only its own key.
        Quarantined and resting keys are probed too; a key that fails the probe gets
        the health its error prescribes.
        """
        self._check_open()
        return await _fanout.run(
            ((label, _list_models) for label in self.key_labels),
            functools.partial(self._tracked, probe=True),
            workers=self._shared.max_concurrency,
        )

    async def fan_out(
        self,
        fn: Callable[[AsyncWishub], Awaitable[T]],
        *,
        keys: Iterable[str] | None = None,
    ) -> OutcomeList[T]:
        """Run ``fn(view)`` once per key, concurrently; one ``Outcome`` per key.

        ``keys`` picks the labels (default: every key; on a ``with_key`` view, its
        own key). A failed key does not raise: its outcome holds the error. Call
        ``raise_for_errors()`` on the result to raise them as an ``ExceptionGroup``.
        """
        self._check_open()
        labels = self.key_labels if keys is None else list(keys)
        for label in labels:
            self.with_key(label)  # unknown (or, on a pinned view, other) labels fail first
        return await _fanout.run(
            ((label, fn) for label in labels),
            self._tracked,
            workers=self._shared.max_concurrency,
        )

    async def map(
        self, fn: Callable[[AsyncWishub, ItemT], Awaitable[T]], items: Iterable[ItemT]
    ) -> OutcomeList[T]:
        """Run ``fn(view, item)`` for each item, spread over the healthy keys.

        Results come back in input order, one ``Outcome`` per item. A key-scoped
        failure (auth, quota, rate limit) moves the call to another key. On a
        ``with_key`` view every item uses that key.
        """
        self._check_open()
        return await _fanout.run(
            _fanout.bind_items(fn, items), self._tracked, workers=self._shared.max_concurrency
        )

    def map_as_completed(
        self, fn: Callable[[AsyncWishub, ItemT], Awaitable[T]], items: Iterable[ItemT]
    ) -> AbstractAsyncContextManager[OutcomeStream[T]]:
        """Like ``map``, but hand out each ``Outcome`` as soon as it completes.

        Use it as an async context manager:

            async with wh.map_as_completed(ask, questions) as outcomes:
                async for outcome in outcomes:
                    print(outcome.index, outcome.value)

        Leaving the block early cancels the calls still running.
        """
        self._check_open()
        return _fanout.as_completed(
            _fanout.bind_items(fn, items), self._tracked, workers=self._shared.max_concurrency
        )

    def _tracked(self, label: str | None, *, probe: bool = False) -> tuple[AsyncWishub, CallRecord]:
        """A view that records its calls' attempts, pinned to ``label`` (or this pin)."""
        record = CallRecord()
        pinned = self._pinned if label is None else self._shared.ring.get(label)
        return _View(self._shared, self._options, pinned, record=record, probe=probe), record

    def _check_open(self) -> None:
        if self._shared.lifecycle.state is LifeState.CLOSED:
            raise ClientStateError("this AsyncWishub is closed; create a new one")


class _View(AsyncWishub):
    """A client sharing its parent's pool and keys, with its own options or key pin."""

    def __init__(
        self,
        shared: Shared,
        options: _Options,
        pinned: AppKey | None,
        *,
        record: CallRecord | None = None,
        probe: bool = False,
    ) -> None:
        self._bind(shared, options, pinned, record=record, probe=probe)

    async def __aenter__(self) -> Self:
        raise ClientStateError(
            "a view from with_key()/with_options() shares its parent's pool:"
            " open and close the parent instead"
        )

    async def aclose(self) -> None:
        """Views do not own the pool: close the parent instead."""

    def __del__(self) -> None:
        pass  # the parent warns, if anyone


@attrs.frozen
class _Chain:
    """A view's middleware around its pipeline.

    The chain is built per call, so the call's expectation reaches the pipeline
    without passing through the middleware.
    """

    send: Send
    middleware: tuple[Middleware, ...]

    async def __call__(self, request: Request, expect: Expect = JSON) -> Response:
        handler: Handler = functools.partial(self.send, expect=expect)
        for middleware in reversed(self.middleware):
            handler = functools.partial(_call_middleware, middleware, handler)
        return await handler(request)


async def _list_models(client: AsyncWishub) -> ModelList:
    return await client.models.list()


def _call_middleware(middleware: Middleware, call_next: Handler, request: Request) -> Any:
    return middleware(request, call_next)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers= takes a mapping, not {type(headers).__name__}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError("header names and values must be strings")
        if name.lower() == "authorization":
            raise ConfigurationError(
                "set keys with app_key=/app_keys=, not an Authorization header"
            )
        if not _visible(name) or not _visible(value, space=True):
            raise ConfigurationError(f"header {name!r} has control or non-ASCII characters")
        checked[name] = value
    return checked


def _visible(text: str, *, space: bool = False) -> bool:
    low = 0x20 if space else 0x21
    return bool(text) and all(low <= ord(char) <= 0x7E for char in text)  # noqa: PLR2004


def _check_base_url(base_url: object, *, allow_http: bool) -> str:
    if not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a str, not {type(base_url).__name__}")
    try:
        url = urllib.parse.urlsplit(base_url.strip())
        host = url.hostname
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"base_url {base_url!r} is not a valid URL: {exc}") from None
    if "@" in url.netloc:
        raise ConfigurationError("base_url must not hold credentials; keys go in app_key=")
    if url.scheme not in {"http", "https"} or not host:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if url.query or url.fragment or base_url.rstrip().endswith(("?", "#")):
        raise ConfigurationError(
            f"base_url {base_url!r} has a query or a fragment; give the API root only,"
            " such as https://wishub-x1.ctyun.cn/v1"
        )
    if not _visible(base_url.strip()):
        raise ConfigurationError(f"base_url {base_url!r} has spaces or control characters")
    if url.scheme == "http" and not allow_http and not _is_loopback(host):
        raise ConfigurationError(
            f"refusing to send AppKeys over plain http to {host}; use https,"
            " or pass allow_http=True if you really mean it"
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _make_transport(backend: object, http_client: object, max_concurrency: int) -> Transport:
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
    if http_client is None:
        return HttpxTransport(new_httpx_client(max_concurrency, HTTPX_KEEPALIVE), owned=True)
    return HttpxTransport.of_caller(http_client)
