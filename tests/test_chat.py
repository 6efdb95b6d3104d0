from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

from wishub_async import AsyncWishub, ChatStream
from wishub_async.exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    NotFoundError,
    ResponseValidationError,
    ServerError,
)
from wishub_async.models import ChatCompletion
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

KEY = "0123456789abcdef0123456789abcdef"
KEY2 = "fedcba9876543210fedcba9876543210"
MODEL = DEFAULT_MODELS[0]
ASK = [{"role": "user", "content": "你好 world"}]
ANSWER = "You said: 你好 world"


@pytest.fixture
def fake() -> FakeWishub:
    return FakeWishub([KEY, KEY2])


async def start(wh: AsyncWishub, **params: Any) -> ChatStream:
    stream: ChatStream = await wh.chat.completions.create(
        model=MODEL, messages=ASK, stream=True, **params
    )
    return stream


# -- whole answers -----------------------------------------------------------------


@pytest.mark.anyio
async def test_create_returns_a_completion_with_reasoning_and_usage(fake: FakeWishub) -> None:
    fake.chat.reasoning = "Think first."
    async with fake.client(app_key=KEY) as wh:
        answer = await wh.chat.completions.create(model=MODEL, messages=ASK)
    assert isinstance(answer, ChatCompletion)
    assert answer.text == ANSWER
    assert answer.reasoning == "Think first."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.model == MODEL
    assert answer.created is not None


@pytest.mark.anyio
async def test_known_params_sent_none_omitted_extra_body_merged(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        await wh.chat.completions.create(
            model=MODEL,
            messages=ASK,
            temperature=0.5,
            max_tokens=2,
            stop=["\n"],
            top_p=None,
            user="u-1",
            extra_body={"top_k": 3, "temperature": 0.1},
        )
    sent = fake.requests[-1].json
    assert sent == {
        "model": MODEL,
        "messages": ASK,
        "temperature": 0.1,
        "max_tokens": 2,
        "stop": ["\n"],
        "user": "u-1",
        "top_k": 3,
    }


@pytest.mark.anyio
async def test_max_tokens_gives_finish_reason_length(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        answer = await wh.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
    assert answer.text == "You said: "
    assert answer.choices[0].finish_reason == "length"


@pytest.mark.anyio
async def test_unknown_parameters_are_passed_through(fake: FakeWishub) -> None:
    platform_only: Any = {"enable_search": True, "repetition_penalty": 1.05}
    async with fake.client(app_key=KEY) as wh:
        await wh.chat.completions.create(model=MODEL, messages=ASK, **platform_only)
    assert fake.requests[-1].json == {"model": MODEL, "messages": ASK, **platform_only}


@pytest.mark.anyio
async def test_misuse_fails_before_sending(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(InvalidRequestError, match="messages"):
            await wh.chat.completions.create(model=MODEL, messages="hi")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="model"):
            await wh.chat.completions.create(model="", messages=ASK)
    assert fake.requests == []


@pytest.mark.anyio
async def test_unknown_model_is_not_found(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(NotFoundError):
            await wh.chat.completions.create(model="nope", messages=ASK)
        with pytest.raises(NotFoundError):
            await wh.chat.completions.create(model="nope", messages=ASK, stream=True)
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_error_envelope_inside_a_200_is_a_typed_error_and_retried(
    fake: FakeWishub,
) -> None:
    body = b'{"error": {"code": "500001", "type": "INVOKE_MODEL_ERROR", "message": "boom"}}'
    fake.fail(status=200, body=body, times=1)
    async with fake.client(app_key=KEY) as wh:
        answer = await wh.chat.completions.create(model=MODEL, messages=ASK)
        assert answer.text == ANSWER
        fake.fail(status=200, body=body, times=3)
        with pytest.raises(ServerError) as caught:
            await wh.chat.completions.create(model=MODEL, messages=ASK)
    assert caught.value.status_code == 200
    assert caught.value.code == 500001
    assert fake.count(path="/v1/chat/completions") == 5


# -- streams: the platform's shape and quirks -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("done", [True, False])
async def test_fake_stream_bytes_have_the_platform_quirks(fake: FakeWishub, done: bool) -> None:
    fake.chat.done = done
    async with httpx.AsyncClient(transport=fake) as http:
        reply = await http.post(
            "https://wishub.fake/v1/chat/completions",
            json={"model": MODEL, "messages": ASK, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        )
    assert reply.content.startswith(b'data:{"id"')
    assert reply.content.endswith(b"data:[DONE]\n\n") is done


@pytest.mark.anyio
async def test_stream_chunks_role_content_finish_then_usage(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh, stream_options={"include_usage": True})
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.text for chunk in chunks) == ANSWER
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == ()
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 4
    assert stream.closed
    assert fake.chat.open_streams == 0
    assert fake.requests[-1].json["stream"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", [b"data:", b"data: "])
@pytest.mark.parametrize("done", [True, False])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("piece_size", [None, 1, 7])
async def test_stream_quirks_all_parse_the_same(
    fake: FakeWishub,
    prefix: bytes,
    done: bool,
    newline: bytes,
    piece_size: int | None,
) -> None:
    fake.chat.prefix, fake.chat.done, fake.chat.newline = prefix, done, newline
    fake.chat.piece_size = piece_size
    fake.chat.reasoning = "先想一想。"
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh, stream_options={"include_usage": True})
        async with stream:
            answer = await stream.collect()
    assert answer.text == ANSWER
    assert answer.reasoning == "先想一想。"
    assert answer.usage is not None
    assert answer.choices[0].finish_reason == "stop"
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_reasoning_deltas_come_before_content(fake: FakeWishub) -> None:
    fake.chat.reasoning = "Step one. Step two."
    async with fake.client(app_key=KEY) as wh, await start(wh) as stream:
        pieces = [(chunk.reasoning, chunk.text) async for chunk in stream]
    reasoning = [r for r, _ in pieces if r]
    assert "".join(reasoning) == "Step one. Step two."
    first_text = next(i for i, (_, t) in enumerate(pieces) if t)
    assert all(not r for r, _ in pieces[first_text:])


@pytest.mark.anyio
async def test_collect_after_partial_iteration_includes_all_chunks(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh, await start(wh) as stream:
        first = await anext(stream)
        second = await anext(stream)
        assert stream.completion.text == first.text + second.text
        answer = await stream.collect()
    assert answer.text == ANSWER
    assert answer.id.startswith("chatcmpl-fake-")
    assert answer.object == "chat.completion"


# -- in-stream errors and retries -----------------------------------------------------


@pytest.mark.anyio
async def test_in_stream_error_after_chunks_raises_typed_error_without_retry(
    fake: FakeWishub,
) -> None:
    fake.chat.fail_stream(after=3)
    texts: list[str] = []

    async def consume(stream: ChatStream) -> None:
        async with stream:
            async for chunk in stream:
                texts.append(chunk.text)  # noqa: PERF401 - chunks before the error count

    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh)
        with pytest.raises(ServerError) as caught:
            await consume(stream)
    error = caught.value
    assert error.status_code == 200
    assert error.type == "INVOKE_MODEL_ERROR"
    assert error.code == 500001
    assert error.message == "服务接口异常,请联系管理员"
    assert error.key == "…cdef"
    assert len(texts) == 3
    assert "".join(texts) == "You said: "
    assert fake.count(path="/v1/chat/completions") == 1
    assert stream.closed
    assert fake.chat.open_streams == 0


@pytest.mark.parametrize(
    "failure",
    [
        {"after": 0},  # an error event first
        {"after": 1},  # an error event after the role chunk (no content yet)
        {"after": 1, "drop": True},  # the connection breaks
        {"after": 0, "stall": True},  # nothing comes: the idle timeout fires
        {"shape": "drop_mid_body"},  # a 200 whose body is cut short
    ],
)
@pytest.mark.anyio
async def test_failure_before_the_first_content_chunk_is_retried(
    fake: FakeWishub, failure: dict[str, Any]
) -> None:
    if "shape" in failure:
        fake.fail(**failure)
    else:
        fake.chat.fail_stream(**failure)
    async with fake.client(app_key=KEY) as wh, await start(wh, idle_timeout=0.25) as stream:
        answer = await stream.collect()
        assert stream.attempts == 2
    assert answer.text == ANSWER
    assert answer.choices[0].message.role == "assistant"
    assert fake.count(path="/v1/chat/completions") == 2
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_retries_before_the_first_chunk_follow_the_policy(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=0, times=5)
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(ServerError):
            await start(wh)
    assert fake.count(path="/v1/chat/completions") == 3  # RetryPolicy().attempts
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_non_retryable_error_before_the_first_chunk(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=0, type="invalid_request_error", message="bad")
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(BadRequestError, match="bad"):
            await start(wh)
    assert fake.count(path="/v1/chat/completions") == 1


@pytest.mark.anyio
async def test_unknown_in_stream_error_type_falls_back_to_status_200(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=0, type="SOMETHING_NEW")
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(APIError) as caught:
            await start(wh)
    assert type(caught.value) is APIError
    assert caught.value.status_code == 200


@pytest.mark.parametrize(
    ("failure", "error", "match"),
    [
        ({"drop": True}, APIConnectionError, "RemoteProtocolError"),
        ({"stall": True}, APITimeoutError, "idle_timeout"),
    ],
)
@pytest.mark.anyio
async def test_failure_after_the_first_chunk_reaches_the_caller(
    fake: FakeWishub, failure: dict[str, Any], error: type[Exception], match: str
) -> None:
    fake.chat.fail_stream(after=3, **failure)
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh, idle_timeout=0.25)
        with pytest.raises(error, match=match):
            await stream.collect()
    assert stream.closed
    assert fake.count(path="/v1/chat/completions") == 1
    assert fake.chat.open_streams == 0


# -- closing: break, exceptions, cancellation, timeouts ----------------------------------


@pytest.mark.anyio
async def test_break_closes_the_response(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        async with await start(wh) as stream:
            async for _ in stream:
                assert fake.chat.open_streams == 1
                break
        assert stream.closed
        assert fake.chat.open_streams == 0
        del stream
        gc.collect()  # trio warns here about abandoned async generators, if any
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_exception_in_the_block_closes_the_response(fake: FakeWishub) -> None:
    async def fail_inside(stream: ChatStream) -> None:
        async with stream:
            async for _ in stream:
                _ = 1 / 0

    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh)
        with pytest.raises(ZeroDivisionError):
            await fail_inside(stream)
    assert stream.closed
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
@pytest.mark.parametrize("use_with", [True, False])
async def test_cancellation_mid_stream_closes_the_response(
    fake: FakeWishub, use_with: bool
) -> None:
    fake.chat.fail_stream(after=3, stall=True)
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh)
        seen = 0
        with anyio.CancelScope() as scope:
            if use_with:
                async with stream:
                    async for _ in stream:
                        seen += 1
                        if seen == 3:  # the next read waits for ever: cancel it
                            scope.cancel()
            else:
                async for _ in stream:
                    seen += 1
                    if seen == 3:
                        scope.cancel()
        assert scope.cancelled_caught
        assert stream.closed
        assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_cancelling_a_task_waiting_on_a_stalled_stream(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=2, stall=True)
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh)
        reached = anyio.Event()

        async def consume() -> None:
            async with stream:
                async for _ in stream:
                    if stream.completion.text:
                        reached.set()

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await reached.wait()
            group.cancel_scope.cancel()
    assert stream.closed
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_stream_timeout_is_separate_from_idle_timeout(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=2, stall=True)
    async with fake.client(app_key=KEY) as wh:
        stream = await start(wh, idle_timeout=None, stream_timeout=0.3)
        with pytest.raises(APITimeoutError, match="stream took over"):
            await stream.collect()
    assert fake.chat.open_streams == 0


@pytest.mark.asyncio  # on trio the abandoned body's async generators warn as well
async def test_a_stream_dropped_while_open_warns_and_gives_its_slot_back(
    fake: FakeWishub,
) -> None:
    async with fake.client(app_key=KEY, max_concurrency=1) as wh:
        stream = await start(wh)
        assert "open" in repr(stream)
        assert wh._shared.limiter.borrowed_tokens == 1
        with pytest.warns(ResourceWarning, match="ChatStream"):  # noqa: PT031
            del stream
            gc.collect()
        assert wh._shared.limiter.borrowed_tokens == 0
        assert wh.key_status()[0].in_flight == 0
        assert len(await wh.models.list()) == len(DEFAULT_MODELS)  # not blocked forever


# -- many keys -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_fan_out_streams_and_whole_answers_per_key(fake: FakeWishub) -> None:
    fake.add_key(KEY2, ["only-mine"])

    async def ask(wh: AsyncWishub) -> str:
        answer = await wh.chat.completions.create(model=MODEL, messages=ASK)
        async with await start(wh) as stream:
            return answer.text + "|" + (await stream.collect()).text

    async with fake.client(app_keys={"a": KEY, "b": KEY2, "c": "x" * 32}) as wh:
        outcomes = await wh.fan_out(ask)
        states = {status.label: status.state for status in wh.key_status()}
    assert outcomes[0].value == f"{ANSWER}|{ANSWER}"
    assert isinstance(outcomes[1].error, NotFoundError)
    assert isinstance(outcomes[2].error, AuthenticationError)
    assert states == {"a": "healthy", "b": "healthy", "c": "quarantined"}
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_in_stream_auth_error_moves_a_map_item_to_another_key(fake: FakeWishub) -> None:
    fake.chat.fail_stream(after=0, type="INCORRECT_API_KEY_PROVIDED")

    async def ask(wh: AsyncWishub, question: str) -> str:
        messages = [{"role": "user", "content": question}]
        stream = await wh.chat.completions.create(model=MODEL, messages=messages, stream=True)
        async with stream:
            return (await stream.collect()).text

    async with fake.client(app_keys=[KEY, KEY2], max_concurrency=1) as wh:
        outcomes = await wh.map(ask, ["one", "two", "three"])
        states = sorted(status.state for status in wh.key_status())
    assert [outcome.value for outcome in outcomes] == [
        "You said: one",
        "You said: two",
        "You said: three",
    ]
    assert outcomes[0].attempts == 2
    assert states == ["healthy", "quarantined"]


# -- exact platform bytes ------------------------------------------------------------------


class RawTransport(httpx.AsyncBaseTransport):
    """Answers every request with the given body pieces; counts open streams."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.open = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Tracked(self), request=request)


class _Tracked(httpx.AsyncByteStream):
    def __init__(self, owner: RawTransport) -> None:
        self.owner = owner
        owner.open += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.owner.pieces:
            yield piece

    async def aclose(self) -> None:
        self.owner.open -= 1


def raw_client(pieces: list[bytes]) -> tuple[AsyncWishub, RawTransport]:
    transport = RawTransport(pieces)
    client = AsyncWishub(
        app_key=KEY,
        base_url="https://wishub.fake/v1",
        http_client=httpx.AsyncClient(transport=transport),
    )
    return client, transport


def sse(*events: Any) -> bytes:
    return b"".join(b"data:" + json.dumps(event).encode() + b"\n\n" for event in events)


HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.anyio
async def test_documented_platform_stream_without_done() -> None:
    body = sse(
        chunk({"role": "assistant"}),
        chunk({"content": "你"}),
        chunk({"content": "好"}),
        chunk({}, "stop"),
        {**HEAD, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
    )
    wh, transport = raw_client([body[i : i + 5] for i in range(0, len(body), 5)])
    async with wh, await start(wh) as stream:
        answer = await stream.collect()
    assert answer.text == "你好"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 2
    assert answer.usage.total_tokens == 0  # not sent, so the default
    assert transport.open == 0


@pytest.mark.anyio
async def test_tool_call_deltas_are_joined() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    body = sse(
        chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({}, "tool_calls"),
    )
    wh, _ = raw_client([body])
    async with wh, await start(wh) as stream:
        answer = await stream.collect()
    message = answer.choices[0].message
    assert message.content is None
    assert message.tool_calls[0].id == "call_1"
    assert message.tool_calls[0].function.name == "f"
    assert message.tool_calls[0].function.arguments == '{"a": 1}'
    assert answer.choices[0].finish_reason == "tool_calls"


@pytest.mark.anyio
async def test_only_done_is_an_empty_answer() -> None:
    wh, transport = raw_client([b"data:[DONE]\n\n"])
    async with wh, await start(wh) as stream:
        answer = await stream.collect()
    assert answer.choices == ()
    assert transport.open == 0


@pytest.mark.anyio
async def test_empty_body_is_a_connection_error_after_retries() -> None:
    wh, transport = raw_client([b": ping\n\n"])
    async with wh:
        with pytest.raises(APIConnectionError, match="before its first chunk"):
            await start(wh)
    assert transport.open == 0


@pytest.mark.anyio
async def test_malformed_chunk_is_a_validation_error_and_closes() -> None:
    wh, transport = raw_client([sse(chunk({"content": "a"})), b'data:{"choices": 5}\n\n'])
    async with wh:
        stream = await start(wh)
        with pytest.raises(ResponseValidationError, match="choices") as caught:
            await stream.collect()
    assert caught.value.body_excerpt == '{"choices": 5}'
    assert stream.closed
    assert transport.open == 0


# -- both backends, in-process and over real HTTP ---------------------------------------------


@pytest.mark.anyio
async def test_stream_on_both_backends_in_process(fake: FakeWishub) -> None:
    fake.chat.reasoning = "hmm"
    async with fake.client(app_key=KEY) as wh:
        async with await start(wh, stream_options={"include_usage": True}) as stream:
            answer = await stream.collect()
        assert answer.text == ANSWER
        assert answer.reasoning == "hmm"
        fake.chat.fail_stream(after=2)
        with pytest.raises(ServerError):
            async with await start(wh) as stream:
                await stream.collect()
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_stream_on_both_backends_over_loopback_http(fake: FakeWishub) -> None:
    fake.chat.piece_size = 3
    async with fake.serve() as base_url, AsyncWishub(app_key=KEY, base_url=base_url) as wh:
        async with await start(wh) as stream:
            assert (await stream.collect()).text == ANSWER
        fake.chat.fail_stream(after=0)
        async with await start(wh) as stream:
            assert (await stream.collect()).text == ANSWER
        fake.chat.fail_stream(after=3, type="INVOKE_MODEL_ERROR")
        with pytest.raises(ServerError):
            async with await start(wh) as stream:
                await stream.collect()
        answer = await wh.chat.completions.create(model=MODEL, messages=ASK)
        assert answer.text == ANSWER
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_break_drop_and_byte_pieces_over_loopback_http(fake: FakeWishub) -> None:
    fake.chat.piece_size = 1
    async with fake.serve() as base_url, AsyncWishub(app_key=KEY, base_url=base_url) as wh:
        for _ in range(3):
            async with await start(wh) as stream:
                async for _ in stream:
                    break
            assert stream.closed
            async for _ in stream:  # a closed stream yields nothing more
                pytest.fail("closed stream yielded")
            await stream.aclose()  # idempotent
        gc.collect()  # trio warns here about abandoned async generators, if any
        await anyio.lowlevel.checkpoint()
        async with await start(wh) as stream:
            assert (await stream.collect()).text == ANSWER
        fake.chat.piece_size = None
        fake.chat.fail_stream(after=3, drop=True)
        with pytest.raises(APIConnectionError):
            async with await start(wh) as stream:
                await stream.collect()
        fake.chat.fail_stream(after=1, drop=True)
        async with await start(wh) as stream:
            assert (await stream.collect()).text == ANSWER
        assert stream.attempts == 2
        vectors = await wh.embeddings.create(model=MODEL, input=["a", "b"])
        assert len(vectors.vectors) == 2


# -- open streams hold their slots; their end settles key health ---------------------


@pytest.mark.anyio
async def test_open_streams_hold_their_concurrency_slots(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY, max_concurrency=2) as wh:
        first, second = await start(wh), await start(wh)
        assert wh.key_status()[0].in_flight == 2
        with anyio.move_on_after(0.2) as blocked:
            await wh.models.list()  # both slots are taken by the open streams
        assert blocked.cancelled_caught
        await first.aclose()
        assert wh.key_status()[0].in_flight == 1
        assert len(await wh.models.list()) == len(DEFAULT_MODELS)
        await second.aclose()
        assert wh.key_status()[0].in_flight == 0


@pytest.mark.anyio
async def test_an_error_mid_stream_counts_against_the_key(fake: FakeWishub) -> None:
    from wishub_async import Hooks, RequestEnded  # noqa: PLC0415

    ended: list[RequestEnded] = []
    fake.chat.fail_stream(after=2, times=1)
    async with fake.client(app_key=KEY, hooks=Hooks(on_request_end=ended.append)) as wh:
        stream = await start(wh)
        assert ended == []  # a stream's call ends when the stream does
        with pytest.raises(ServerError):
            await stream.collect()
        status = wh.key_status()[0]
        assert (status.successes, status.failures) == (0, 1)
        assert status.last_error_type == "INVOKE_MODEL_ERROR"
        assert status.in_flight == 0
        await (await start(wh)).collect()
        assert wh.key_status()[0].successes == 1
    assert [(event.status_code, event.error) for event in ended] == [
        (200, "INVOKE_MODEL_ERROR"),
        (200, None),
    ]


@pytest.mark.asyncio
@respx.mock(base_url="https://wishub.test/v1")
async def test_a_whole_answer_to_a_stream_request_still_reads(
    respx_mock: respx.MockRouter,
) -> None:
    whole = {
        "id": "c-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "all at once"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    respx_mock.post("/chat/completions").respond(json=whole)
    async with AsyncWishub(app_key=KEY, base_url="https://wishub.test/v1") as wh:
        stream = await start(wh)
        answer = await stream.collect()
    assert answer.text == "all at once"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 6
