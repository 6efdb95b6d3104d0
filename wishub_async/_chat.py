"""``wh.chat.completions``: chat answers, whole or streamed (``ChatStream``)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, Self, TypedDict, Unpack, overload

import anyio

from ._converter import structure, structure_json
from ._errors import ErrorTable, api_error, excerpt
from ._resources import Call, error_check, is_error_event, request_body
from ._sse import DONE, SSEDecoder, decode_payload
from ._transport import Request, Response
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ResponseValidationError,
    WishubError,
)
from .models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Choice,
    ChunkChoice,
    FunctionCall,
    ToolCall,
)

__all__ = ["DEFAULT_IDLE_TIMEOUT", "Chat", "ChatParams", "ChatStream", "Completions"]

DEFAULT_IDLE_TIMEOUT = 300.0
"""Seconds a stream may go without a chunk (keep-alive comments do not count)."""

_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 64 * 1024
_UNWIND_READS = 64

Message = Mapping[str, Any]


class ChatParams(TypedDict, total=False):
    """The optional parameters of ``chat.completions.create``; None means "not sent".

    The platform accepts the OpenAI names; support for each is unconfirmed. Other
    keywords are passed through as they are; ``extra_body`` is merged in last.
    """

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | Sequence[str] | None
    frequency_penalty: float | None
    presence_penalty: float | None
    user: str | None
    n: int | None
    seed: int | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    parallel_tool_calls: bool | None
    response_format: Mapping[str, Any] | None
    logit_bias: Mapping[str, float] | None
    logprobs: bool | None
    top_logprobs: int | None
    stream_options: Mapping[str, Any] | None
    extra_body: Mapping[str, Any] | None


class Chat:
    """``wh.chat``: holds ``completions``."""

    def __init__(self, call: Call, table: ErrorTable) -> None:
        self.completions = Completions(call, table)


class Completions:
    """``wh.chat.completions``: ``POST /chat/completions``."""

    def __init__(self, call: Call, table: ErrorTable) -> None:
        self._call = call
        self._table = table
        self._check = error_check(table)

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        stream: Literal[False] = False,
        **params: Unpack[ChatParams],
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        stream: Literal[True],
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        stream_timeout: float | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        stream: bool,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        stream_timeout: float | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatCompletion | ChatStream: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        stream: bool = False,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        stream_timeout: float | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatCompletion | ChatStream:
        """Ask for a chat answer: whole, or as a ``ChatStream`` with ``stream=True``.

        Args:
            model: the model's id.
            messages: ``{"role": ..., "content": ...}`` dicts; ``content`` may be a
                list of parts for vision models.
            stream: return a ``ChatStream`` of chunks instead of the whole answer.
            idle_timeout: (stream) seconds to wait for each chunk; None for no limit.
            stream_timeout: (stream) seconds for the whole stream, from this call to
                its last chunk; None for no limit.
            **params: the OpenAI parameters in ``ChatParams`` (``temperature``,
                ``max_tokens``, ``stop``, ``tools``, ``stream_options``…), typed;
                any other keyword is sent as it is (the platform's own parameters),
                and ``extra_body`` is merged into the JSON last.

        A stream is retried (per the ``RetryPolicy``, on this or another key) until
        its first chunk with content arrives; after that an error ends it. So
        ``await create(..., stream=True)`` returns once the answer has started.

        Raises:
            APIError: the server refused, or (stream) sent an error event.
            APIConnectionError: no answer arrived; ``APITimeoutError`` on a timeout.
            ResponseValidationError: the answer did not have the expected shape.
            TypeError: ``messages`` is not a list of messages.
        """
        given: object = messages
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            raise TypeError("messages= must be a list of {'role': ..., 'content': ...} dicts")
        body = request_body(
            {"model": model, "messages": [dict(message) for message in messages]},
            {name: value for name, value in params.items() if name != "extra_body"},
            params.get("extra_body"),
        )
        if not stream:
            request = Request("POST", "/chat/completions", json=body, check=self._check)
            response = await self._call(request)
            return structure_json(response.content, ChatCompletion)
        body["stream"] = True
        chat_stream = ChatStream(
            self._table, idle_timeout=idle_timeout, stream_timeout=stream_timeout
        )
        request = Request(
            "POST",
            "/chat/completions",
            json=body,
            stream=True,
            check=chat_stream._start,  # noqa: SLF001
        )
        try:
            await self._call(request)
        except BaseException:
            await chat_stream.aclose()
            raise
        return chat_stream


class ChatStream:
    """A streamed chat answer: an async iterator of chunks and an async context manager.

    ::

        async with await wh.chat.completions.create(..., stream=True) as stream:
            async for chunk in stream:
                print(chunk.text, end="")

    The connection is closed when the stream ends, on an error, on cancellation, and
    on leaving the ``async with`` block (so also after ``break``). ``collect()`` reads
    the rest and returns the whole answer as a ``ChatCompletion``.
    """

    def __init__(
        self, table: ErrorTable, *, idle_timeout: float | None, stream_timeout: float | None
    ) -> None:
        self._table = table
        self._idle_timeout = idle_timeout
        self._stream_timeout = stream_timeout
        self._deadline = None if stream_timeout is None else anyio.current_time() + stream_timeout
        self._response: Response | None = None
        self._open = False
        self._bytes: AsyncIterator[bytes] | None = None
        self._decoder = SSEDecoder()
        self._ready: deque[ChatCompletionChunk] = deque()
        self._error: APIError | None = None
        self._ended = False
        self._saw_done = False
        self._eof = False
        self._parts = _Parts()

    # -- the first chunk, inside the retry loop ------------------------------------

    async def _start(self, response: Response) -> None:
        """``Request.check``: read up to the first chunk with content, or fail the attempt."""
        self._response, self._open = response, True
        self._bytes = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._ready.clear()
        self._error, self._ended, self._saw_done, self._eof = None, False, False, False
        try:
            while not self._ended and not any(map(_has_content, self._ready)):
                await self._read()
        except BaseException:
            await self.aclose()
            raise
        try:
            self._check_started()
        except WishubError:
            await self._finish()
            raise

    def _check_started(self) -> None:
        """After the read-ahead: raise the error that ended the stream before any content."""
        if any(map(_has_content, self._ready)):
            return
        if self._error is not None:
            raise self._error
        if not self._saw_done:
            raise APIConnectionError("the stream ended before its first chunk", key=self.key)

    # -- reading -------------------------------------------------------------------

    async def _read(self) -> None:
        """Read one piece of the body and queue the chunks it completes."""
        assert self._bytes is not None  # noqa: S101 - set by _start before any read
        limit = self._idle_timeout
        if self._deadline is not None:
            remaining = self._deadline - anyio.current_time()
            limit = remaining if limit is None else min(limit, remaining)
        try:
            with anyio.fail_after(limit):
                data = await anext(self._bytes, None)
        except TimeoutError:
            raise self._timeout(limit) from None
        if data is None:
            self._take(self._decoder.close())
            self._ended = self._eof = True
        else:
            self._take(self._decoder.feed(data))

    def _take(self, payloads: list[str]) -> None:
        for payload in payloads:
            for value in decode_payload(payload):
                if self._ended:
                    return
                if value == DONE:
                    self._ended = self._saw_done = True
                elif is_error_event(value):
                    self._error = self._api_error(value)
                    self._ended = True
                else:
                    self._ready.append(_chunk(value, payload))

    async def _finish(self, error: APIError | None = None) -> None:
        """The stream ended (``[DONE]`` or an error event): read to the body's end, close.

        Reading the little that follows (usually just the end of the chunked body) lets
        the connection go back to the pool. It is bounded in bytes and time; past
        either, the connection is closed instead.
        """
        try:
            if self._open and not self._eof and self._bytes is not None:
                drained = 0
                with anyio.move_on_after(_DRAIN_SECONDS):
                    while drained <= _DRAIN_BYTES:
                        data = await anext(self._bytes, None)
                        if data is None:
                            break
                        drained += len(data)
        except WishubError:
            pass  # the answer is complete; a broken tail does not matter
        finally:
            await self._close(error)

    def _api_error(self, value: object) -> APIError:
        response = self._response
        assert response is not None  # noqa: S101 - only called while reading
        content = response.scrub(json.dumps(value, ensure_ascii=False).encode())
        return api_error(200, response.headers, content, key=response.key, table=self._table)

    def _timeout(self, limit: float | None) -> APITimeoutError:
        key = self._response.key if self._response is not None else None
        if limit == self._idle_timeout:
            return APITimeoutError(f"no stream chunk for {limit:g}s (idle_timeout)", key=key)
        return APITimeoutError(f"the stream took over {self._stream_timeout:g}s", key=key)

    # -- the caller's side -----------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                await self._finish(error)
                raise error
            if self._ended or not self._open:
                await self._finish()
                raise StopAsyncIteration
            try:
                await self._read()
            except BaseException as exc:
                await self._close(exc)
                raise
        chunk = self._ready.popleft()
        self._parts.add(chunk)
        return chunk

    async def collect(self) -> ChatCompletion:
        """Read the rest of the stream; the whole answer (chunks already read included)."""
        async for _ in self:
            pass
        return self.completion

    @property
    def completion(self) -> ChatCompletion:
        """The answer from the chunks delivered so far, joined into a ``ChatCompletion``."""
        return self._parts.completion()

    @property
    def key(self) -> str:
        """The label of the AppKey that produced this stream."""
        return self._response.key if self._response is not None else ""

    @property
    def attempts(self) -> int:
        """HTTP attempts it took to start this stream."""
        return self._response.attempts if self._response is not None else 0

    @property
    def closed(self) -> bool:
        """Whether the connection has been released."""
        return not self._open

    async def aclose(self) -> None:
        """Close the connection (safe to call twice, shielded from cancellation)."""
        await self._close(None)

    async def _close(self, error: BaseException | None) -> None:
        """Close, telling the client what ended the stream (for the key's health)."""
        if not self._open:
            return
        self._open = False
        self._ready.clear()
        response = self._response
        assert response is not None  # noqa: S101 - set together with _open
        with anyio.CancelScope(shield=True):
            await response.aclose(error)
            await _unwind(self._bytes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(
                "a ChatStream was garbage collected while open; use `async with` or"
                " `await stream.aclose()` to release its connection",
                ResourceWarning,
                stacklevel=2,
            )
            if self._response is not None:
                with contextlib.suppress(Exception):  # no event loop left, say
                    self._response.release()  # give back its concurrency slots

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<ChatStream {state} key={self.key}>"


def _chunk(value: object, payload: str) -> ChatCompletionChunk:
    """One chunk; a whole ``chat.completion`` (a server that ignored ``stream``) too."""
    if isinstance(value, dict) and value.get("object") == "chat.completion":
        value = {**value, "choices": [_as_delta(choice) for choice in value.get("choices", ())]}
    try:
        return structure(value, ChatCompletionChunk)
    except ResponseValidationError as exc:
        exc.body_excerpt = excerpt(payload)
        raise


def _as_delta(choice: Any) -> Any:
    if isinstance(choice, dict) and "message" in choice and "delta" not in choice:
        return {**{k: v for k, v in choice.items() if k != "message"}, "delta": choice["message"]}
    return choice


async def _unwind(chunks: AsyncIterator[bytes] | None) -> None:
    """Finish a body's async-generator chain left suspended by an early close.

    Closing the outer generator would leave the inner ones (ours, httpx's, httpcore's)
    suspended, and trio warns about each when it is garbage collected. One read in an
    already-cancelled scope makes the cancellation travel through every frame instead,
    so each one finishes. The response is closed by then: at most what was already
    buffered is read, and dropped.
    """
    if chunks is None:
        return
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            for _ in range(_UNWIND_READS):  # data already buffered comes without a checkpoint
                if await anext(chunks, None) is None:
                    break
        except Exception:  # noqa: BLE001, S110 - the body is closed; any error here is moot
            pass


def _has_content(chunk: ChatCompletionChunk) -> bool:
    """Whether a chunk carries more than the opening role (retries stop after it)."""
    if chunk.usage is not None:
        return True
    return any(
        choice.finish_reason is not None
        or choice.delta.content
        or choice.delta.reasoning_content
        or choice.delta.tool_calls
        for choice in chunk.choices
    )


class _ChoiceParts:
    """The pieces of one choice seen so far."""

    __slots__ = ("content", "finish_reason", "reasoning", "role", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.finish_reason: str | None = None
        self.tools: dict[int, list[str | None]] = {}

    def add(self, choice: ChunkChoice) -> None:
        delta = choice.delta
        if delta.role:
            self.role = delta.role
        if delta.content is not None:
            if self.content is None:
                self.content = []
            self.content.append(delta.content)
        if delta.reasoning_content is not None:
            if self.reasoning is None:
                self.reasoning = []
            self.reasoning.append(delta.reasoning_content)
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        for call in delta.tool_calls:
            tool = self.tools.setdefault(call.index, [None, None, None, None])
            function = call.function or FunctionCall()
            tool[0] = tool[0] or call.id
            tool[1] = tool[1] or call.type
            tool[2] = tool[2] or function.name
            if function.arguments is not None:
                tool[3] = (tool[3] or "") + function.arguments

    def message(self) -> ChatMessage:
        return ChatMessage(
            role=self.role,
            content=None if self.content is None else "".join(self.content),
            reasoning_content=None if self.reasoning is None else "".join(self.reasoning),
            tool_calls=tuple(
                ToolCall(id=call or "", type=kind or "function", function=FunctionCall(name, args))
                for call, kind, name, args in (self.tools[index] for index in sorted(self.tools))
            ),
        )


class _Parts:
    """Joins stream chunks into a ``ChatCompletion``."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _ChoiceParts] = {}
        self.usage: Any = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        if not self.head or not self.head["id"]:
            self.head = {
                "id": chunk.id,
                "created": chunk.created,
                "model": chunk.model,
                "system_fingerprint": chunk.system_fingerprint,
            }
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            parts = self.choices.get(choice.index)
            if parts is None:
                parts = self.choices[choice.index] = _ChoiceParts()
            parts.add(choice)

    def completion(self) -> ChatCompletion:
        return ChatCompletion(
            **self.head,
            choices=tuple(
                Choice(index, parts.message(), parts.finish_reason)
                for index, parts in sorted(self.choices.items())
            ),
            usage=self.usage,
        )
