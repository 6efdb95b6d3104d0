"""``wh.chat.completions``: chat answers, whole or streamed (``ChatStream``)."""

from __future__ import annotations

import enum
import json
import math
import warnings
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, Self, TypedDict, Unpack, overload

import anyio

from . import _clock
from ._context import Expect, Send
from ._converter import structure, structure_json
from ._errors import ErrorTable, api_error, is_error_body
from ._http import Request, Response
from ._resources import request_body
from ._sse import DONE, SSEDecoder, decode_payload
from ._text import excerpt
from ._vision import message_bodies
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    InvalidRequestError,
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

    def __init__(self, send: Send, table: ErrorTable, *, flatten: bool = False) -> None:
        self.completions = Completions(send, table, flatten=flatten)


class Completions:
    """``wh.chat.completions``: ``POST /chat/completions``."""

    def __init__(self, send: Send, table: ErrorTable, *, flatten: bool = False) -> None:
        self._send = send
        self._table = table
        self._flatten = flatten  # the client's flatten_text_parts

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
            model: the model's id or name.
            messages: ``{"role": ..., "content": ...}`` dicts; ``content`` may be a
                list of parts for vision models (``text_part``, ``image_part``).
            stream: return a ``ChatStream`` of chunks instead of the whole answer.
            idle_timeout: (stream) the longest wait for each chunk, the first one
                included (from the request); keep-alive comments do not reset it.
                None for no limit.
            stream_timeout: (stream) seconds for the whole stream, from this call to
                its last chunk (queueing, retries and the wait for the response
                headers included); None for no limit.
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
            InvalidRequestError: ``messages`` is not a list of messages, or a
                timeout is not a number of seconds above 0.
        """
        given: object = messages
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            raise InvalidRequestError(
                "messages= must be a list of {'role': ..., 'content': ...} dicts"
            )
        body = request_body(
            {"model": model, "messages": message_bodies(messages, flatten=self._flatten)},
            {name: value for name, value in params.items() if name != "extra_body"},
            params.get("extra_body"),
        )
        if not stream:
            request = Request("POST", "/chat/completions", json=body, model=model)
            response = await self._send(request)
            return structure_json(response.content, ChatCompletion)
        body["stream"] = True
        # Ask for the usage chunk (rate budgets reconcile their token reservation with
        # it, and ``stream.completion.usage`` reports it), unless the caller chose.
        body.setdefault("stream_options", {"include_usage": True})
        chat_stream = ChatStream(
            self._table, idle_timeout=idle_timeout, stream_timeout=stream_timeout
        )
        expect = Expect(
            accept=chat_stream._start,  # noqa: SLF001 - the stream's own read-ahead
            first_chunk_timeout=idle_timeout,
            deadline=chat_stream._deadline,  # noqa: SLF001
        )
        request = Request("POST", "/chat/completions", json=body, stream=True, model=model)
        try:
            await self._send(request, expect)
        except BaseException:
            await chat_stream.aclose()
            raise
        return chat_stream


def _timeout_arg(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidRequestError(f"{name} must be a number of seconds above 0, got {value!r}")
    return float(value)


class _State(enum.Enum):
    """Where a stream is."""

    OPENING = "opening"
    """Reading ahead to the first chunk with content, inside the retry loop."""
    OPEN = "open"
    """Chunks flow to the caller."""
    ENDED = "ended"
    """``[DONE]``, an error event or the end of the body: nothing more to read."""
    LEFT = "left"
    """A loop left early: the slots are back; the connection closes at ``aclose`` or
    at the client's next call, whichever comes first."""
    CLOSED = "closed"
    """The connection is released."""


class ChatStream:
    """A streamed chat answer: an async iterator of chunks and an async context manager.

    ::

        async with await wh.chat.completions.create(..., stream=True) as stream:
            async for chunk in stream:
                print(chunk.text, end="")

    The connection is released when the stream ends, on an error, on cancellation,
    on leaving the ``async with`` block, and on leaving an ``async for`` loop early
    (``break``): a stream is read by one loop, once. ``collect()`` reads the rest
    and returns the whole answer as a ``ChatCompletion``.
    """

    def __init__(
        self, table: ErrorTable, *, idle_timeout: float | None, stream_timeout: float | None
    ) -> None:
        self._table = table
        self._idle_timeout = _timeout_arg("idle_timeout", idle_timeout)
        self._stream_timeout = _timeout_arg("stream_timeout", stream_timeout)
        self._deadline = None if stream_timeout is None else _clock.now() + stream_timeout
        self._state = _State.OPENING
        self._response: Response | None = None
        self._bytes: AsyncIterator[bytes] | None = None
        self._decoder = SSEDecoder()
        self._ready: deque[ChatCompletionChunk] = deque()
        self._error: APIError | None = None
        self._saw_done = False
        self._eof = False
        self._idle_until: float | None = None
        self._parts = _Parts()

    # -- the first chunk, inside the retry loop ------------------------------------

    async def _start(self, response: Response) -> None:
        """``Expect.accept``: read up to the first chunk with content, or fail the attempt.

        The pipeline bounds this read-ahead by ``idle_timeout`` and closes the
        response when it fails.
        """
        self._response, self._state = response, _State.OPENING
        self._bytes = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._ready.clear()
        self._error, self._saw_done, self._eof, self._idle_until = None, False, False, None
        while self._state is _State.OPENING and not any(map(_has_content, self._ready)):
            await self._read()
        if any(map(_has_content, self._ready)):
            self._state = _State.OPEN
            self._touch()
            return
        if self._error is not None:
            raise self._error
        if not self._saw_done:
            raise APIConnectionError("the stream ended before its first chunk", label=self.label)
        # [DONE] with no content: an empty answer, read to its end.

    # -- reading -------------------------------------------------------------------

    def _touch(self) -> None:
        """A chunk arrived: the idle clock starts again."""
        if self._idle_timeout is not None:
            self._idle_until = _clock.now() + self._idle_timeout

    async def _read(self) -> None:
        """Read one piece of the body and queue the chunks it completes.

        The wait is bounded by the idle deadline (set when the last chunk arrived, so
        comments and partial events do not extend it) and by ``stream_timeout``.
        """
        assert self._bytes is not None  # noqa: S101 - set by _start before any read
        ends = [t for t in (self._idle_until, self._deadline) if t is not None]
        if ends:
            with anyio.move_on_after(min(ends) - _clock.now()) as scope:
                data = await anext(self._bytes, None)
            if scope.cancelled_caught:
                raise self._timeout()
        else:
            data = await anext(self._bytes, None)
        if data is None:
            self._take(self._decoder.close())
            self._eof = True
            self._end()
        else:
            self._take(self._decoder.feed(data))

    def _end(self) -> None:
        if self._state in {_State.OPENING, _State.OPEN}:
            self._state = _State.ENDED

    def _take(self, payloads: list[str]) -> None:
        before = len(self._ready)
        for payload in payloads:
            for value in decode_payload(payload):
                if self._state is _State.ENDED:
                    return
                if value == DONE:
                    self._saw_done = True
                    self._end()
                elif is_error_body(value):
                    self._error = self._api_error(value)
                    self._end()
                else:
                    chunk = _chunk(value, payload)
                    if chunk.usage is not None and self._response is not None:
                        self._response.note_tokens(chunk.usage.total_tokens)
                    self._ready.append(chunk)
        if len(self._ready) > before and self._state is _State.OPEN:
            self._touch()

    async def _drain(self) -> None:
        """The stream ended (``[DONE]`` or an error event): read to the body's end.

        Reading the little that follows (usually just the end of the chunked body) lets
        the connection go back to the pool. It is bounded in bytes and time; past
        either, the connection is closed instead.
        """
        if self._eof or self._bytes is None:
            return
        drained = 0
        try:
            with anyio.move_on_after(_DRAIN_SECONDS):
                while drained <= _DRAIN_BYTES:
                    data = await anext(self._bytes, None)
                    if data is None:
                        return
                    drained += len(data)
        except WishubError:
            pass  # the answer is complete; a broken tail does not matter

    def _api_error(self, value: object) -> APIError:
        response = self._response
        assert response is not None  # noqa: S101 - only called while reading
        content = json.dumps(value, ensure_ascii=False).encode()
        return api_error(200, response.headers, content, label=response.label, table=self._table)

    def _timeout(self) -> APITimeoutError:
        if self._deadline is not None and _clock.now() >= self._deadline:
            message = f"the stream took over {self._stream_timeout:g}s (stream_timeout)"
        else:
            message = f"no stream chunk for {self._idle_timeout:g}s (idle_timeout)"
        return APITimeoutError(message, label=self.label)

    # -- the caller's side -----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return _Loop(self)

    async def __anext__(self) -> ChatCompletionChunk:
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                await self._close(error, drain=True)
                raise error
            if self._state is not _State.OPEN:
                await self._close(None, drain=self._state is _State.ENDED)
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
    def label(self) -> str:
        """The label of the AppKey that produced this stream."""
        return self._response.label if self._response is not None else ""

    @property
    def attempts(self) -> int:
        """HTTP attempts it took to start this stream."""
        return self._response.attempts if self._response is not None else 0

    @property
    def closed(self) -> bool:
        """Whether the connection has been released."""
        return self._state is _State.CLOSED

    async def aclose(self) -> None:
        """Close the connection (safe to call twice, shielded from cancellation)."""
        await self._close(None)

    async def _close(self, error: BaseException | None, *, drain: bool = False) -> None:
        """Close, telling the client what ended the stream (for the key's health)."""
        if self._state is _State.CLOSED:
            return
        response = self._response
        self._state = _State.CLOSED
        self._ready.clear()
        if response is None:
            return
        with anyio.CancelScope(shield=True):
            if drain:
                await self._drain()
            await response.aclose(error)

    def _abandon(self) -> None:
        """A loop over the stream was left early: end the stream without I/O."""
        if self._state is not _State.CLOSED and self._response is not None:
            self._state = _State.LEFT
            self._ready.clear()
            self._response.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._state not in {_State.CLOSED, _State.LEFT} and self._response is not None:
            warnings.warn(
                "a ChatStream was garbage collected while open; use `async with` or"
                " `await stream.aclose()` to release its connection",
                ResourceWarning,
                stacklevel=2,
            )
            self._response.release()  # give back its slots; the next call closes it

    def __repr__(self) -> str:
        return f"<ChatStream {self._state.value} key={self.label}>"


class _Loop:
    """One ``async for`` over a ``ChatStream``; leaving it early ends the stream.

    Python tells an iterator nothing when a loop is left with ``break``, but the loop
    drops its iterator at once: this one then gives the stream's concurrency slots
    back on the spot. That cannot do I/O, so the client's next call (or its
    ``aclose``) closes the connection.
    """

    def __init__(self, stream: ChatStream) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._stream.__anext__()

    def __del__(self) -> None:
        self._stream._abandon()  # noqa: SLF001 - the stream's own loop


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
