"""``FakeWishub``: a scriptable stand-in for the platform, for tests and demos."""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Literal

import anyio
import attrs
import httpx

from .. import AsyncWishub
from ._chat import FakeChat, FakeEmbeddings, chat_route, embeddings_route
from ._images import FakeImages, images_route
from ._limits import FakeLimit, LimitStyle
from ._replies import (
    CUT_BODY,
    DEFAULT_MODELS,
    FREE_QUOTA_ENDED,
    Failure,
    Reply,
    dumps,
    model_list,
)
from ._rerank import DASHSCOPE_PATH, FakeRerank, dashscope_rerank_route, rerank_route
from ._server import serve

__all__ = [
    "CUT_BODY",
    "DEFAULT_MODELS",
    "FREE_QUOTA_ENDED",
    "Failure",
    "FakeRequest",
    "FakeWishub",
    "Reply",
]

IN_PROCESS_URL = "https://wishub.fake/v1"


@attrs.frozen
class FakeRequest:
    """One request the fake received. ``key`` is the raw key sent (repr redacts it).

    ``headers`` holds the request headers (lower-case names) without Authorization.
    """

    method: str
    path: str
    key: str | None = attrs.field(repr=lambda key: f"…{key[-4:]}" if key else "None")
    json: Any
    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)


Route = Callable[["FakeWishub", str, Any], Awaitable[Reply]]


class FakeWishub(httpx.AsyncBaseTransport):
    """A fake wishub platform: per-key model lists, scripted failures, a request log.

    Mount it in-process:

        fake = FakeWishub({"k" * 32: ["my-model"]})
        async with fake.client(app_key="k" * 32) as wh:
            assert [m.id for m in await wh.models.list()] == ["my-model"]

    or serve real HTTP on loopback with ``async with fake.serve() as base_url``.

    Args:
        keys: the keys the fake knows, each with its model ids (a list of keys gets
            ``models`` each). None accepts any key.
        models: the model ids of keys given without their own list.
        latency: seconds every reply waits before it is sent.
    """

    routes: ClassVar[dict[tuple[str, str], Route]] = {}
    """(method, path below /v1) -> handler; endpoints register themselves here."""
    root_routes: ClassVar[dict[tuple[str, str], Route]] = {}
    """(method, path from the host's root) -> handler, for DashScope-style routes."""

    def __init__(
        self,
        keys: Mapping[str, Sequence[str]] | Iterable[str] | None = None,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        latency: float = 0.0,
    ) -> None:
        self.models = tuple(models)
        self.latency = latency
        self.accept_any_key = keys is None
        self.keys: dict[str, tuple[str, ...]] = {}
        for key, key_models in (
            keys.items()
            if isinstance(keys, Mapping)
            else ((key, self.models) for key in keys or ())
        ):
            self.add_key(key, key_models)
        self.requests: list[FakeRequest] = []
        self.open_connections = 0
        """Connections the loopback server holds open now (``serve()`` only)."""
        self.connections_opened = 0
        """Connections the loopback server accepted in all (``serve()`` only)."""
        self.in_flight: Counter[str | None] = Counter()
        self.peak_in_flight: Counter[str | None] = Counter()
        self.peak_in_flight_total = 0
        self._in_flight_total = 0
        self._scripts: dict[str | None, deque[list[Any]]] = {}
        self.limits: list[FakeLimit] = []
        """The rate limits the fake enforces (``limit()`` adds one)."""
        self.chat = FakeChat()
        """How chat answers: reply text, reasoning mode, stream quirks and failures."""
        self.embeddings = FakeEmbeddings()
        """How embeddings answer: vector size, field name."""
        self.rerank = FakeRerank()
        """How the rerank routes answer: document form, ranking."""
        self.images = FakeImages()
        """How image generation answers: URLs, revised prompts, image size."""
        self._quota_ended: dict[tuple[str | None, str], Failure] = {}

    def __repr__(self) -> str:
        return f"<FakeWishub {len(self.keys)} keys, {len(self.requests)} requests>"

    def add_key(self, key: str, models: Sequence[str] | None = None) -> None:
        """Make ``key`` valid, seeing ``models`` (default: the fake's models)."""
        self.keys[key] = tuple(self.models if models is None else models)

    def fail(
        self,
        key: str | None = None,
        *,
        times: int = 1,
        **failure: Any,
    ) -> Failure:
        """Script the next ``times`` requests with ``key`` (any key if None) to fail.

        Keyword arguments are ``Failure``'s: ``type``, ``status``, ``shape``,
        ``code``, ``message``, ``retry_after``, ``headers``, ``latency``, ``body``.
        Key-specific scripts run before any-key ones; scripts run in order.
        """
        script = Failure(**failure)
        self._scripts.setdefault(key, deque()).append([script, times])
        return script

    def limit(
        self,
        requests: int | None = None,
        tokens: int | None = None,
        *,
        per: float = 60.0,
        style: LimitStyle = "sliding",
        model: str | None = None,
    ) -> FakeLimit:
        """Enforce a rate limit per key and model (every model, or ``model``).

        Past it the fake answers 429 ``rate_limit_exceeded`` with a Retry-After that
        says when the call would fit. ``style`` is how it counts: ``"sliding"``,
        ``"fixed"`` or ``"bucket"`` (see ``FakeLimit``).
        """
        added = FakeLimit(requests, tokens, per, style, model)
        self.limits.append(added)
        return added

    def end_free_quota(
        self, key: str | None, model: str, *, shape: Literal["error", "flat"] = "error"
    ) -> None:
        """From now on, calls for ``model`` with ``key`` (any key if None) get the 429.

        The answer is the platform's spent free quota: HTTP 429 with the message
        ``FREE_QUOTA_ENDED`` in the nested (``"error"``) or ``"flat"`` envelope. Other
        models still answer. ``restore_free_quota`` ends it.
        """
        self._quota_ended[key, model] = Failure(
            type=None, status=429, shape=shape, message=FREE_QUOTA_ENDED
        )

    def restore_free_quota(self, key: str | None, model: str) -> None:
        """Undo ``end_free_quota(key, model)``."""
        self._quota_ended.pop((key, model), None)

    def count(self, key: str | None = None, *, path: str | None = None) -> int:
        """How many requests arrived (with ``key``, on ``path`` when given)."""
        return sum(
            1
            for request in self.requests
            if (key is None or request.key == key) and (path is None or request.path == path)
        )

    def client(self, **options: Any) -> AsyncWishub:
        """An ``AsyncWishub`` wired to this fake in-process (``options`` as usual).

        Requests never touch a socket. For real HTTP, ``serve()`` the fake and give its
        URL to ``AsyncWishub(base_url=...)``; a ``base_url`` here is refused, since
        it would silently be ignored.
        """
        if {"base_url", "host", "http_client"} & options.keys():
            raise TypeError(
                "fake.client() is in-process; for real HTTP use"
                " `async with fake.serve() as url: AsyncWishub(base_url=url, ...)`"
            )
        return AsyncWishub(
            base_url=IN_PROCESS_URL, http_client=httpx.AsyncClient(transport=self), **options
        )

    def serve(self, *, tls: ssl.SSLContext | None = None) -> AbstractAsyncContextManager[str]:
        """Serve real HTTP on a loopback port: ``async with fake.serve() as base_url``.

        Args:
            tls: a server-side ``ssl.SSLContext`` to speak HTTPS instead.
        """
        return serve(self, tls)

    # -- answering ---------------------------------------------------------------

    async def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """The reply to one request; both the transport and the server call this."""
        key = _bearer(headers.get("authorization"))
        payload = _loads(body)
        self._in_flight_total += 1
        self.in_flight[key] += 1
        self.peak_in_flight[key] = max(self.peak_in_flight[key], self.in_flight[key])
        self.peak_in_flight_total = max(self.peak_in_flight_total, self._in_flight_total)
        try:
            reply = await self._answer(method, path, key, payload)
        finally:
            self.in_flight[key] -= 1
            self._in_flight_total -= 1
        shown = {name: value for name, value in headers.items() if name != "authorization"}
        self.requests.append(FakeRequest(method, path, key, payload, reply.status, shown))
        return reply

    async def _answer(self, method: str, path: str, key: str | None, payload: Any) -> Reply:
        if self.latency:
            await anyio.sleep(self.latency)
        scripted = self._next_failure(key)
        if scripted is not None:
            if scripted.latency and scripted.shape != "slow_body":
                await anyio.sleep(scripted.latency)
            return scripted.reply()
        if key is None or not (self.accept_any_key or key in self.keys):
            return Failure(type="INCORRECT_API_KEY_PROVIDED", shape="flat").reply()
        route = self.root_routes.get((method, path)) or self.routes.get(
            (method, path.removeprefix("/v1"))
        )
        if route is None:
            return Failure(
                type="invalid_request_error", status=404, message=f"no route {method} {path}"
            ).reply()
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            return await route(self, key, payload)
        refusal = self._refusal(key, model)
        if refusal is not None:
            return refusal
        reply = await route(self, key, payload)
        spent = _total_tokens(reply.body) if self.limits else 0
        for limit in self.limits if spent else ():
            limit.spend(key, model, spent, time.monotonic())
        return reply

    def _refusal(self, key: str, model: str) -> Reply | None:
        """The 429 a call for ``model`` gets: its free quota ended, or a rate limit."""
        spent = self._quota_ended.get((key, model)) or self._quota_ended.get((None, model))
        if spent is not None:
            return spent.reply()
        now = time.monotonic()
        for limit in self.limits:
            wait = limit.admit(key, model, now)
            if wait is not None:
                return Failure(
                    type="rate_limit_exceeded", status=429, retry_after=f"{max(wait, 0):.3f}"
                ).reply()
        return None

    def _next_failure(self, key: str | None) -> Failure | None:
        for owner in (key, None):
            queue = self._scripts.get(owner)
            if queue:
                entry = queue[0]
                entry[1] -= 1
                if entry[1] <= 0:
                    queue.popleft()
                return entry[0]  # type: ignore[no-any-return]  # [Failure, remaining]
        return None

    def models_of(self, key: str) -> tuple[str, ...]:
        """The model ids ``key`` sees."""
        return self.keys.get(key, self.models)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The in-process httpx transport."""
        reply = await self.answer(
            request.method,
            request.url.path,
            {name.lower(): value for name, value in request.headers.items()},
            await request.aread(),
        )
        if reply.drop == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if reply.drop == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if reply.drop is not None:
            return httpx.Response(
                reply.status,
                headers=reply.headers,
                stream=_CutStream(request, reset=reply.drop == "reset_after_headers"),
                request=request,
            )
        if isinstance(reply.body, bytes):
            return httpx.Response(
                reply.status, headers=reply.headers, content=reply.body, request=request
            )
        return httpx.Response(
            reply.status, headers=reply.headers, stream=_ChunkStream(reply.body), request=request
        )


async def _list_models(fake: FakeWishub, key: str, _: Any) -> Reply:
    return Reply(200, {"content-type": "application/json"}, dumps(model_list(fake.models_of(key))))


FakeWishub.routes[("GET", "/models")] = _list_models
FakeWishub.routes[("POST", "/chat/completions")] = chat_route
FakeWishub.routes[("POST", "/embeddings")] = embeddings_route
FakeWishub.routes[("POST", "/rerank")] = rerank_route
FakeWishub.routes[("POST", "/reranks")] = rerank_route
FakeWishub.routes[("POST", "/images/generations")] = images_route
FakeWishub.root_routes[("POST", DASHSCOPE_PATH)] = dashscope_rerank_route


class _ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()


class _CutStream(httpx.AsyncByteStream):
    def __init__(self, request: httpx.Request, *, reset: bool) -> None:
        self._request = request
        self._reset = reset

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._reset:
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=self._request)
        yield CUT_BODY
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body",
            request=self._request,
        )


def _total_tokens(body: bytes | AsyncIterator[bytes]) -> int:
    if not isinstance(body, bytes) or b"total_tokens" not in body:
        return 0
    try:
        usage = json.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        return 0
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else 0


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :]
    return None


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode("utf-8", "replace")
