"""The fake's chat and embeddings endpoints, and the knobs that shape their answers.

Replies are deterministic: the answer echoes the last user message (or
``FakeChat.reply``), split into word tokens; vectors are derived from a hash of each
input. Streams follow the platform: ``data:{...}`` lines with no space, an optional
``data:[DONE]``, the usage chunk with ``choices: []``, ``reasoning_content`` deltas in
reasoning mode, and ``{"error": ...}`` events injected after N chunks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
import httpx

from ._replies import JSON_HEADERS, Reply, error_reply
from ._vision import content_problem, count_images

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._fake import FakeWishub

__all__ = [
    "FakeChat",
    "FakeEmbeddings",
    "StreamFailure",
    "chat_route",
    "embeddings_route",
]

CREATED = 1_700_000_000
"""The ``created`` time of every fake completion (deterministic)."""

_STALL = b"<stall>"
_PING = b"<ping>"
_DROP = b"<drop>"
_TOKEN = re.compile(r"\S+\s*|\s+")
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


@attrs.frozen
class StreamFailure:
    """An error event a stream sends after ``after`` chunks, instead of the rest."""

    after: int = 0
    type: str = "INVOKE_MODEL_ERROR"
    message: str = "服务接口异常,请联系管理员"
    code: str | None = "500001"
    stall: bool = False
    """Instead of an error event, send nothing more and never end (idle timeouts)."""
    drop: bool = False
    """Instead of an error event, drop the connection mid-body."""
    ping: float | None = None
    """Instead of an error event, send a keep-alive comment (``: ping``) every ``ping``
    seconds, forever (a gateway that keeps an idle stream open)."""


@attrs.define
class FakeChat:
    r"""How ``POST /chat/completions`` answers (``fake.chat``); change it freely.

    Attributes:
        reply: the answer text; None echoes the last user message.
        reasoning: in reasoning mode, the thinking streamed as ``reasoning_content``
            before the answer (and put in ``message.reasoning_content``); None is off.
        done: whether a stream ends with ``data:[DONE]`` (the platform may omit it).
        prefix: what starts each event line (``b"data:"``, the platform's, no space).
        newline: the line ending (``b"\\n"``, or ``b"\\r\\n"``).
        piece_size: cut the stream's bytes into pieces of this size (boundaries
            anywhere, even inside a UTF-8 character); None sends one piece per event.
        chunk_delay: seconds between stream events (for demos; tests leave it 0).
        open_streams: streams whose body is being sent right now.
        streams: streams started in all.
        images: image parts received in all (vision requests).
        text_only: models that take only string content: a list of parts gets a 400
            (to test ``flatten_text_parts``).
    """

    reply: str | None = None
    reasoning: str | None = None
    done: bool = True
    prefix: bytes = b"data:"
    newline: bytes = b"\n"
    piece_size: int | None = None
    chunk_delay: float = 0.0
    open_streams: int = 0
    streams: int = 0
    images: int = 0
    text_only: set[str] = attrs.field(factory=set)
    _failures: deque[list[Any]] = attrs.field(factory=deque)
    _serial: int = 0

    def fail_stream(
        self,
        after: int = 0,
        *,
        times: int = 1,
        type: str = "INVOKE_MODEL_ERROR",
        stall: bool = False,
        drop: bool = False,
        ping: float | None = None,
        message: str = "服务接口异常,请联系管理员",
    ) -> StreamFailure:
        """Make the next ``times`` streams fail after ``after`` chunks.

        The failure is an in-stream ``{"error": {...}}`` event inside the HTTP 200
        (the platform's way); with ``stall=True`` the stream goes silent instead, with
        ``drop=True`` the connection breaks, and with ``ping=seconds`` only keep-alive
        comments follow, forever.
        """
        failure = StreamFailure(
            after=after, type=type, message=message, stall=stall, drop=drop, ping=ping
        )
        self._failures.append([failure, times])
        return failure

    def _next_failure(self) -> StreamFailure | None:
        if not self._failures:
            return None
        entry = self._failures[0]
        entry[1] -= 1
        if entry[1] <= 0:
            self._failures.popleft()
        failure: StreamFailure = entry[0]
        return failure

    def _next_id(self) -> str:
        self._serial += 1
        return f"chatcmpl-fake-{self._serial}"


@attrs.define
class FakeEmbeddings:
    """How ``POST /embeddings`` answers (``fake.embeddings``).

    Attributes:
        dimensions: the vector size when the request names none.
        field: the name of the vector field: the platform's ``"embeddings"`` or
            OpenAI's ``"embedding"``.
    """

    dimensions: int = 8
    field: Literal["embeddings", "embedding"] = "embeddings"


def vector(text: str, dimensions: int) -> list[float]:
    """The fake's deterministic vector for one input (float32-exact values)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (dimensions // len(seed) + 1))[:dimensions]
    return [round((byte - 128) / 128, 4) for byte in raw]


async def chat_route(fake: FakeWishub, key: str, payload: Any) -> Reply:
    """``POST /chat/completions``: a whole answer, or a stream of chunks."""
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        return error_reply(type="invalid_request_error", message="messages is required")
    model = payload.get("model")
    if model not in fake.models_of(key):
        return error_reply(type="model_not_found", message=f"model {model!r} not found")
    behaviour: FakeChat = fake.chat
    problem = content_problem(payload["messages"], text_only=model in behaviour.text_only)
    if problem is not None:
        return error_reply(type="invalid_request_error", message=problem)
    behaviour.images += count_images(payload["messages"])
    answer = _tokens(behaviour.reply if behaviour.reply is not None else _echo(payload))
    thinking = _tokens(behaviour.reasoning or "")
    finish = "stop"
    limit = payload.get("max_tokens")
    if isinstance(limit, int) and 0 <= limit < len(answer):
        answer, finish = answer[:limit], "length"
    usage = {
        "prompt_tokens": _prompt_tokens(payload),
        "completion_tokens": len(answer) + len(thinking),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    head = {"id": behaviour._next_id(), "created": CREATED, "model": model}  # noqa: SLF001
    if not payload.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(answer)}
        if behaviour.reasoning is not None:
            message["reasoning_content"] = "".join(thinking)
        body = {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return Reply(200, dict(JSON_HEADERS), _dumps(body))
    options = payload.get("stream_options")
    events = _chunks(
        {**head, "object": "chat.completion.chunk"},
        thinking,
        answer,
        finish,
        usage if isinstance(options, dict) and options.get("include_usage") else None,
    )
    body_stream = _stream(behaviour, events, behaviour._next_failure())  # noqa: SLF001
    return Reply(200, dict(_SSE_HEADERS), body_stream)


def _chunks(
    head: dict[str, Any],
    thinking: list[str],
    answer: list[str],
    finish: str,
    usage: Mapping[str, int] | None,
) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**head, "choices": [choice]}

    yield chunk({"role": "assistant"})
    for token in thinking:
        yield chunk({"reasoning_content": token})
    for token in answer:
        yield chunk({"content": token})
    yield chunk({}, finish)
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}


async def _stream(
    behaviour: FakeChat, events: Iterator[dict[str, Any]], failure: StreamFailure | None
) -> AsyncIterator[bytes]:
    behaviour.streams += 1
    behaviour.open_streams += 1
    try:
        for piece in _pieces(behaviour, _frames(behaviour, events, failure)):
            if piece is _STALL:
                await anyio.sleep_forever()
            if piece is _PING:
                assert failure is not None  # noqa: S101 - a ping comes from a failure
                while True:
                    yield b": ping" + behaviour.newline * 2
                    await anyio.sleep(failure.ping or 0)
            if piece is _DROP:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            if behaviour.chunk_delay:
                await anyio.sleep(behaviour.chunk_delay)
            if piece:
                yield piece
    finally:
        behaviour.open_streams -= 1


def _frames(
    behaviour: FakeChat, events: Iterator[dict[str, Any]], failure: StreamFailure | None
) -> Iterator[bytes]:
    """Each event as SSE bytes, or a marker for a stall or a drop."""
    end = behaviour.newline * 2
    for sent, event in enumerate(events):
        if failure is not None and sent == failure.after:
            if failure.ping is not None:
                yield _PING
            if failure.stall or failure.drop:
                yield _STALL if failure.stall else _DROP
            error = {"code": failure.code, "type": failure.type, "message": failure.message}
            yield behaviour.prefix + _dumps({"error": error}) + end
            return
        yield behaviour.prefix + _dumps(event) + end
    if behaviour.done:
        yield behaviour.prefix + b"[DONE]" + end


def _pieces(behaviour: FakeChat, frames: Iterator[bytes]) -> Iterator[bytes]:
    size = behaviour.piece_size
    for frame in frames:
        if frame in {_STALL, _DROP, _PING} or not size:
            yield frame
            continue
        for start in range(0, len(frame), size):
            yield frame[start : start + size]


async def embeddings_route(fake: FakeWishub, key: str, payload: Any) -> Reply:
    """``POST /embeddings``: deterministic vectors under ``fake.embeddings.field``."""
    if not isinstance(payload, dict) or "input" not in payload:
        return error_reply(type="invalid_request_error", message="input is required")
    model = payload.get("model")
    if model not in fake.models_of(key):
        return error_reply(type="model_not_found", message=f"model {model!r} not found")
    behaviour: FakeEmbeddings = fake.embeddings
    inputs = payload["input"]
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    dimensions = payload.get("dimensions") or behaviour.dimensions
    base64_wanted = payload.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        values = vector(json.dumps(item, ensure_ascii=False), dimensions)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            if base64_wanted
            else values
        )
        data.append({"index": index, "object": "embedding", behaviour.field: encoded})
    tokens = sum(len(_tokens(json.dumps(item, ensure_ascii=False))) for item in inputs)
    body = {
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Reply(200, dict(JSON_HEADERS), _dumps(body))


def _echo(payload: dict[str, Any]) -> str:
    for message in reversed(payload["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            images = count_images([message])
            seen = f" [{images} image{'s' * (images > 1)}]" if images else ""
            return f"You said: {_text(content)}{seen}"
    return "Hello from the fake wishub."


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ).strip()
    return str(content or "")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _prompt_tokens(payload: dict[str, Any]) -> int:
    return sum(
        len(_tokens(_text(message.get("content"))))
        for message in payload["messages"]
        if isinstance(message, dict)
    )


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
