"""``AsyncWishub``: the client, its lifecycle, its options and its views."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import anyio
import attrs

from . import _fanout
from ._budget import RateLimit
from ._chat import Chat
from ._context import (
    JSON,
    CallRecord,
    Expect,
    Lifecycle,
    LifeState,
    Send,
    Shared,
)
from ._errors import DEFAULT_ERROR_TABLE, ErrorTable
from ._events import Hooks
from ._hosts import HOSTS, HostName, choose_base_url
from ._http import Handler, Middleware, Request, Response
from ._httpx import HttpxTransport
from ._images import Images
from ._keys import AppKey, KeyPolicy, KeyRing, KeyStatus, load_keys
from ._options import (
    UNCHANGED,
    Options,
    Unchanged,
    check_count,
    check_headers,
    check_state,
    type_check,
)
from ._pipeline import Pipeline
from ._rerank import DEFAULT_RERANK_ROUTES, Rerank, RerankRoutes
from ._resources import Embeddings, Models
from ._retry import RetryPolicy
from ._state import LocalState, State
from ._timeout import Timeout
from ._wire import Transport
from .exceptions import ClientStateError, ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    import httpx

    from ._fanout import OutcomeList, OutcomeStream
    from .models import ModelList

__all__ = ["DEFAULT_BASE_URL", "AsyncWishub"]

DEFAULT_BASE_URL = HOSTS["x1"]
DEFAULT_MAX_CONCURRENCY = 100
T = TypeVar("T")
ItemT = TypeVar("ItemT")
Backend = Literal["httpx", "aiohttp"]


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
        host: a named host instead of ``base_url``: ``"x1"`` (the default),
            ``"x6"``, ``"gateway"`` or ``"coding"`` (see ``HOSTS``).
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
        limits: rate budgets per key and model: one ``RateLimit`` for every model,
            or ``{model: RateLimit}`` with ``"*"`` as the default. A model with no
            limit adapts to the platform's answers; ``RateLimit()`` turns that off.
        token_counter: the tokens to reserve for a call (prompt and answer), for
            limits that count tokens; default: a token a character, plus
            ``max_tokens`` (see the "Rate limits" guide).
        state: where rate budgets and key health live: this process (the default),
            or shared by every process that uses the same store, such as
            ``wishub_async.redis.RedisState``. ``aclose()`` closes its connections
            (it reopens them if another client still uses it).
        rerank_routes: the ``RerankRoutes`` deciding each rerank model's path and
            body shape (default ``DEFAULT_RERANK_ROUTES``).
        flatten_text_parts: send a message ``content`` made only of text parts as
            one string (for models that take only string content).

    Raises:
        ConfigurationError: an option is missing or malformed (a key, a timeout,
            the URL...); nothing is opened then.
    """

    _shared: Shared
    _options: Options
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
        limits: RateLimit | Mapping[str, RateLimit] | None = None,
        token_counter: Callable[[Request], int] | None = None,
        host: HostName | None = None,
        rerank_routes: RerankRoutes | None = None,
        flatten_text_parts: bool = False,
        state: State | None = None,
    ) -> None:
        # Everything is checked before anything is opened: a constructor that fails
        # leaves nothing behind to warn about.
        options = Options.checked(
            base_url=choose_base_url(host, base_url),
            timeout=timeout,
            retry=RetryPolicy() if retry is None else retry,
            headers={} if headers is None else headers,
            middleware=middleware,
            hooks=Hooks() if hooks is None else hooks,
            error_table=DEFAULT_ERROR_TABLE if error_table is None else error_table,
            allow_http=allow_http,
            limits=limits,
            token_counter=token_counter,
            rerank_routes=DEFAULT_RERANK_ROUTES if rerank_routes is None else rerank_routes,
            flatten_text_parts=flatten_text_parts,
        )
        check_count("max_concurrency", max_concurrency)
        if per_key_concurrency is not None:
            check_count("per_key_concurrency", per_key_concurrency)
        key_policy = KeyPolicy() if key_policy is None else key_policy
        type_check("key_policy", key_policy, KeyPolicy)
        ring = KeyRing(
            load_keys(app_key, app_keys),
            per_key_concurrency=per_key_concurrency,
            policy=key_policy,
        )
        state = check_state(LocalState() if state is None else state)
        transport = _make_transport(backend, http_client, max_concurrency)
        shared = Shared(
            transport=transport,
            ring=ring,
            limiter=anyio.CapacityLimiter(max_concurrency),
            lifecycle=Lifecycle(),
            max_concurrency=max_concurrency,
            owned=http_client is None,
            state=state,
        )
        self._bind(shared, options, None)

    def _bind(
        self,
        shared: Shared,
        options: Options,
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
        return Chat(self._send, self._options.error_table, flatten=self._options.flatten_text_parts)

    @cached_property
    def embeddings(self) -> Embeddings:
        """``wh.embeddings``: vectors for texts or token lists."""
        return Embeddings(self._send)

    @cached_property
    def rerank(self) -> Rerank:
        """``wh.rerank``: documents ranked by relevance to a query."""
        return Rerank(self._send, self._options.rerank_routes)

    @cached_property
    def images(self) -> Images:
        """``wh.images``: images generated from a prompt."""
        return Images(self._send)

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
            await self._shared.state.aclose()

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
        base_url: str | Unchanged = UNCHANGED,
        timeout: Timeout | float | httpx.Timeout | Unchanged = UNCHANGED,
        retry: RetryPolicy | Unchanged = UNCHANGED,
        headers: Mapping[str, str] | Unchanged = UNCHANGED,
        middleware: Sequence[Middleware] | Unchanged = UNCHANGED,
        hooks: Hooks | Unchanged = UNCHANGED,
        allow_http: bool | Unchanged = UNCHANGED,
        error_table: ErrorTable | Unchanged = UNCHANGED,
        limits: RateLimit | Mapping[str, RateLimit] | Unchanged | None = UNCHANGED,
        token_counter: Callable[[Request], int] | Unchanged | None = UNCHANGED,
        host: HostName | Unchanged = UNCHANGED,
        rerank_routes: RerankRoutes | Unchanged = UNCHANGED,
        flatten_text_parts: bool | Unchanged = UNCHANGED,
    ) -> AsyncWishub:
        """A view with some options changed, sharing this client's pool and keys.

        Each option replaces the current one, except ``headers``, which are merged over
        the current headers (as OpenAI's ``with_options`` does). ``host`` sets the
        base URL to a named host's. The view keeps this client's key pin, if any.
        """
        current = self._options
        if host is not UNCHANGED:
            base_url = choose_base_url(host, None if base_url is UNCHANGED else base_url)
        options = Options.checked(
            base_url=current.base_url if base_url is UNCHANGED else base_url,
            timeout=current.timeout if timeout is UNCHANGED else timeout,
            retry=current.retry if retry is UNCHANGED else retry,
            headers=current.headers
            if headers is UNCHANGED
            else {**current.headers, **check_headers(headers)},
            middleware=current.middleware if middleware is UNCHANGED else middleware,
            hooks=current.hooks if hooks is UNCHANGED else hooks,
            error_table=current.error_table if error_table is UNCHANGED else error_table,
            allow_http=current.allow_http if allow_http is UNCHANGED else allow_http,
            limits=current.limits if limits is UNCHANGED else limits,
            token_counter=current.token_counter if token_counter is UNCHANGED else token_counter,
            rerank_routes=current.rerank_routes if rerank_routes is UNCHANGED else rerank_routes,
            flatten_text_parts=current.flatten_text_parts
            if flatten_text_parts is UNCHANGED
            else flatten_text_parts,
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
    def max_concurrency(self) -> int:
        """Requests in flight at once over all keys (the width of a ``map``)."""
        return self._shared.max_concurrency

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
        options: Options,
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
        return HttpxTransport.owned(max_concurrency)
    return HttpxTransport.of_caller(http_client)
