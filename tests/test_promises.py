"""The promises 0.1.0 broke, each attacked on both transports (and trio where it runs).

Every test here failed on 0.1.0. The numbers follow the request-path issue's list.
"""

from __future__ import annotations

import gc
import math
import threading
import traceback
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import attrs
import pytest
from conftest import K1, K2, WRONG, until

from wishub_async import (
    APIConnectionError,
    AsyncWishub,
    AuthenticationError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    Handler,
    InvalidRequestError,
    Request,
    Response,
    ResponseValidationError,
    RetryPolicy,
    Timeout,
    WishubError,
)
from wishub_async._cli import main
from wishub_async.testing import FakeWishub

Backend = Literal["httpx", "aiohttp"]
ASK = [{"role": "user", "content": "tell me a long story about keys"}]
STALL = 30.0
"""A server delay no test waits out: only the promise under test can end the call."""
GUARD = 10.0
"""A hang guard, far above any prompt end: never a timing assertion."""


@asynccontextmanager
async def serving(
    fake: FakeWishub, transport: Backend, **options: Any
) -> AsyncIterator[AsyncWishub]:
    if "app_keys" not in options:
        options.setdefault("app_key", K1)
    async with fake.serve() as url, AsyncWishub(base_url=url, backend=transport, **options) as wh:
        yield wh


def model_of(fake: FakeWishub, key: str = K1) -> str:
    return fake.models_of(key)[0]


# -- 1. aclose() ends every call ---------------------------------------------------


@pytest.mark.anyio
async def test_1_aclose_ends_a_call_reading_its_body(transport: Backend) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, shape="slow_body", latency=STALL)  # headers and half the body, then silence
    errors: list[BaseException] = []
    async with fake.serve() as url:
        wh = AsyncWishub(app_key=K1, base_url=url, backend=transport)

        async def call() -> None:
            try:
                await wh.models.list()
            except WishubError as error:
                errors.append(error)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await until(lambda: fake.count() == 1)
                await wh.aclose()
        await until(lambda: fake.open_connections == 0)
    assert len(errors) == 1
    assert isinstance(errors[0], APIConnectionError)
    assert isinstance(errors[0], ClientClosedError)


@pytest.mark.anyio
async def test_1_aclose_ends_a_stream_being_read(transport: Backend) -> None:
    fake = FakeWishub([K1])
    fake.chat.fail_stream(after=3, stall=True)
    async with fake.serve() as url:
        wh = AsyncWishub(app_key=K1, base_url=url, backend=transport)
        stream = await wh.chat.completions.create(
            model=model_of(fake), messages=ASK, stream=True, idle_timeout=STALL
        )
        chunks: list[str] = []
        caught: list[BaseException] = []

        async def read() -> None:
            try:
                async for chunk in stream:
                    chunks.append(chunk.text)  # noqa: PERF401 - watched while it grows
            except WishubError as error:
                caught.append(error)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                group.start_soon(read)
                await until(lambda: len(chunks) >= 2)
                await wh.aclose()
        assert len(caught) == 1
        assert isinstance(caught[0], APIConnectionError)
        assert stream.closed
        await until(lambda: fake.open_connections == 0)
    assert fake.chat.open_streams == 0


# -- 2. a with_key() view never uses another key -------------------------------------


def keys_used(fake: FakeWishub) -> set[str | None]:
    return {request.key for request in fake.requests}


async def list_models(view: AsyncWishub, _: object = None) -> int:
    return len(await view.models.list())


@pytest.mark.anyio
async def test_2_every_method_of_a_view_keeps_its_pin(transport: Backend) -> None:
    fake = FakeWishub([K1, K2])
    async with serving(fake, transport, app_keys={"a": K1, "b": K2}) as wh:
        view = wh.with_key("a")
        assert (await view.map(list_models, range(6))).values == [3] * 6
        assert (await view.fan_out(list_models)).values == [3]
        async with view.map_as_completed(list_models, range(4)) as outcomes:
            assert [outcome.label async for outcome in outcomes] == ["a"] * 4
        checked = await view.check_keys()
        assert [outcome.label for outcome in checked] == ["a"]
        assert [status.label for status in view.key_status()] == ["a"]
        assert view.key_labels == ["a"]
        tuned = view.with_options(timeout=30)  # options keep the pin
        assert (await tuned.map(list_models, range(3))).values == [3] * 3
        with pytest.raises(ConfigurationError, match="pinned"):
            await view.fan_out(list_models, keys=["b"])
        with pytest.raises(ConfigurationError, match="pinned"):
            view.with_key("b")
    assert keys_used(fake) == {K1}


@pytest.mark.anyio
async def test_2_a_pinned_view_never_moves_to_another_key(transport: Backend) -> None:
    fake = FakeWishub([K1, K2])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="0", times=2)
    fake.fail(K1, type="INCORRECT_API_KEY_PROVIDED", status=401)
    async with serving(fake, transport, app_keys={"a": K1, "b": K2}) as wh:
        outcomes = await wh.with_key("a").map(list_models, range(2))
    assert any(isinstance(outcome.error, AuthenticationError) for outcome in outcomes)
    assert [outcome.label for outcome in outcomes] == ["a", "a"]
    assert keys_used(fake) == {K1}


@pytest.mark.anyio
async def test_2_a_view_honours_its_options_in_map(transport: Backend) -> None:
    fake = FakeWishub([K1])
    seen: list[str] = []

    async def tag(request: Request, call_next: Handler) -> Response:
        seen.append(request.path)
        return await call_next(attrs.evolve(request, headers={"x-view": "yes"}))

    async with serving(fake, transport) as wh:
        await wh.with_options(middleware=[tag]).map(list_models, range(3))
    assert seen == ["/models"] * 3
    assert [request.headers.get("x-view") for request in fake.requests] == ["yes"] * 3


# -- 3. stream timeouts bound the stream -------------------------------------------------


async def read_all(
    wh: AsyncWishub, fake: FakeWishub, *, idle_timeout: float, stream_timeout: float | None = None
) -> None:
    stream = await wh.chat.completions.create(
        model=model_of(fake),
        messages=ASK,
        stream=True,
        idle_timeout=idle_timeout,
        stream_timeout=stream_timeout,
    )
    async with stream:
        async for _ in stream:
            pass


@pytest.mark.anyio
@pytest.mark.parametrize("after", [0, 3], ids=["before any content", "mid-stream"])
async def test_3_keep_alive_pings_do_not_reset_idle_timeout(transport: Backend, after: int) -> None:
    fake = FakeWishub([K1])
    fake.chat.fail_stream(after=after, ping=0.01, times=5)
    async with serving(fake, transport, retry=RetryPolicy(attempts=1)) as wh:
        with anyio.fail_after(GUARD), pytest.raises(APIConnectionError, match="idle_timeout"):
            await read_all(wh, fake, idle_timeout=0.3)
        assert await list_models(wh) == 3  # the client stays usable
    assert fake.chat.open_streams == 0


@pytest.mark.anyio
async def test_3_stream_timeout_covers_the_wait_for_headers(transport: Backend) -> None:
    fake = FakeWishub([K1], latency=STALL)  # the headers never come in time
    async with serving(fake, transport) as wh:
        with anyio.fail_after(GUARD), pytest.raises(APIConnectionError, match="stream_timeout"):
            await wh.chat.completions.create(
                model=model_of(fake), messages=ASK, stream=True, stream_timeout=0.3
            )


@pytest.mark.anyio
async def test_3_stream_timeout_bounds_a_stream_that_keeps_flowing(transport: Backend) -> None:
    fake = FakeWishub([K1])
    fake.chat.reply = " ".join(["word"] * 10_000)
    fake.chat.chunk_delay = 0.01  # each chunk well inside idle_timeout
    async with serving(fake, transport) as wh:
        with anyio.fail_after(GUARD), pytest.raises(APIConnectionError, match="stream_timeout"):
            await read_all(wh, fake, idle_timeout=5, stream_timeout=0.5)


# -- 4. no socket outlives aclose() -------------------------------------------------------


@pytest.mark.anyio
async def test_4_calls_racing_aclose_finish_before_it_or_fail(transport: Backend) -> None:
    fake = FakeWishub([K1], latency=0.05)
    finished_after_close: list[str] = []
    outcomes: list[object] = []
    async with fake.serve() as url:
        wh = AsyncWishub(app_key=K1, base_url=url, backend=transport)
        closed = anyio.Event()

        async def call() -> None:
            try:
                outcomes.append(await wh.models.list())
            except WishubError as error:
                outcomes.append(error)
            else:
                if closed.is_set():
                    finished_after_close.append("late")

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(call)
                await until(lambda: fake._in_flight_total > 0)
                await anyio.sleep(0.02)
                await wh.aclose()
                closed.set()
            gc.collect()
        await until(lambda: fake.open_connections == 0)
    assert len(outcomes) == 20
    assert not finished_after_close
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors  # the race was real: some calls were cut
    assert all(isinstance(error, ClientStateError) for error in errors)


# -- 5. moving a call never turns a rate limit into the wrong error -----------------------


@pytest.mark.anyio
async def test_5_a_rejection_elsewhere_waits_for_the_rate_limited_key(
    transport: Backend,
) -> None:
    fake = FakeWishub([K1])  # WRONG is revoked
    fake.fail(K1, type="rate_limit_exceeded", retry_after="1")
    async with serving(fake, transport, app_keys={"a": K1, "b": WRONG}) as wh:
        assert await list_models(wh) == 3
    assert [request.key for request in fake.requests] == [K1, WRONG, K1]


@pytest.mark.anyio
async def test_5_rejected_keys_do_not_fail_a_call_another_key_serves_soon(
    transport: Backend,
) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="1", times=2)
    keys = {"a": K1, "b": WRONG, "c": "e" * 32}
    async with serving(fake, transport, app_keys=keys) as wh:
        outcomes = await wh.map(list_models, range(3))
    assert outcomes.values == [3, 3, 3]


# -- 6. the CLI never prints a key ---------------------------------------------------------


SECRET = "5ec7e75ec7e75ec7e75ec7e75ec7e75e"


@pytest.mark.parametrize(
    "argv",
    [
        ["--app-key=" + SECRET, "models"],
        ["models", "--api-key=" + SECRET],
        ["models", "--keys-file=" + SECRET],
        ["models", "--keys-file", SECRET],
        ["models", SECRET],
        ["models", "--app-key", SECRET, "--base-url", "http://example.com/v1"],
        ["chat", "hi", "--model=" + SECRET, "--demo"],
    ],
)
def test_6_no_usage_or_error_line_echoes_a_key(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert code != 0
    assert SECRET not in out
    assert SECRET not in err
    assert SECRET[-4:] in err or "error" in err


# -- 7. keys echoed by the server are scrubbed everywhere --------------------------------


def texts_of(error: BaseException) -> Iterator[str]:
    yield str(error)
    yield repr(error)
    yield "".join(traceback.format_exception(error))
    for name in ("message", "body", "body_excerpt", "label"):
        yield repr(getattr(error, name, ""))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        {"status": 200, "body": b"<html>echo " + K1.encode() + b"</html>"},
        {
            "status": 200,
            "body": b'{"object": "list", "data": [{"id": 7, "k": "' + K1.encode() + b'"}]}',
        },
        {"status": 302, "headers": {"location": f"https://elsewhere.example/?k={K1}"}, "body": b""},
        {"type": "invalid_request_error", "message": f"no such key: {K1}"},
        {"status": 500, "body": ("bad: " + K1 + " ").encode() * 40},
        {"type": "invalid_request_error", "message": f'json-escaped: "{K1}"'},
    ],
    ids=[
        "2xx-not-json",
        "2xx-wrong-shape",
        "redirect-location",
        "error-message",
        "excerpt",
        "escaped",
    ],
)
async def test_7_an_echoed_key_never_reaches_an_error(
    transport: Backend, failure: dict[str, Any]
) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, times=5, **failure)
    async with serving(fake, transport, retry=RetryPolicy(attempts=1)) as wh:
        with pytest.raises(WishubError) as caught:
            await wh.models.list()
    for text in texts_of(caught.value):
        assert K1 not in text


@pytest.mark.anyio
async def test_7_an_echoed_key_in_a_stream_event_is_scrubbed(transport: Backend) -> None:
    fake = FakeWishub([K1])
    stream_body = b"data:not json at all " + K1.encode() + b"\n\n"
    fake.fail(K1, status=200, headers={"content-type": "text/event-stream"}, body=stream_body)
    async with serving(fake, transport) as wh:
        with pytest.raises(ResponseValidationError) as caught:
            await wh.chat.completions.create(model=model_of(fake), messages=ASK, stream=True)
    for text in texts_of(caught.value):
        assert K1 not in text
    assert "…" + K1[-4:] in caught.value.body_excerpt


@pytest.mark.anyio
async def test_7_an_echoed_key_in_a_response_header_is_scrubbed(transport: Backend) -> None:
    fake = FakeWishub([K1])
    body = b'{"object": "list", "data": []}'
    fake.fail(K1, status=200, headers={"x-echo": f"Bearer {K1}"}, body=body)
    seen: list[str] = []

    async def keep_headers(request: Request, call_next: Handler) -> Response:
        response = await call_next(request)
        seen.append(repr(response) + repr(dict(response.headers)))
        return response

    async with serving(fake, transport, middleware=[keep_headers]) as wh:
        assert await list_models(wh) == 0
    assert seen
    assert K1 not in seen[0]
    assert "Bearer …" + K1[-4:] in seen[0]


def test_7_a_key_split_across_stream_chunks_is_still_scrubbed() -> None:
    from wishub_async._body import StreamBody  # noqa: PLC0415
    from wishub_async._keys import KeyPolicy, KeyRing  # noqa: PLC0415 - the unit under test

    class Pieces:
        def __init__(self, data: bytes, size: int) -> None:
            self.pieces = [data[i : i + size] for i in range(0, len(data), size)]

        def __aiter__(self) -> Pieces:
            return self

        async def __anext__(self) -> bytes:
            if not self.pieces:
                raise StopAsyncIteration
            return self.pieces.pop(0)

        async def read(self) -> bytes:
            raise NotImplementedError

        async def aclose(self) -> None:
            pass

    [key] = KeyRing([("a", K1)], per_key_concurrency=None, policy=KeyPolicy()).keys
    data = (b"data: {'k': '" + K1.encode() + b"'}\n\n") * 3 + K1[:7].encode()

    async def read_all(size: int) -> bytes:
        body = StreamBody(Pieces(data, size), key, [])
        return b"".join([chunk async for chunk in body])

    for size in (1, 2, 5, 7, 31, 32, 33, 1000):
        scrubbed = anyio.run(read_all, size)
        assert K1.encode() not in scrubbed, size
        assert scrubbed.count(("…" + K1[-4:]).encode()) == 3, size
        assert scrubbed.endswith(K1[:7].encode())  # a mere prefix at the end is kept


# -- 8. every failure is ours ----------------------------------------------------------------


@pytest.mark.anyio
async def test_8_reading_a_stream_after_aclose_is_ours(transport: Backend) -> None:
    fake = FakeWishub([K1])
    async with fake.serve() as url:
        wh = AsyncWishub(app_key=K1, base_url=url, backend=transport)
        stream = await wh.chat.completions.create(model=model_of(fake), messages=ASK, stream=True)
        await wh.aclose()
        with pytest.raises(ClientStateError):
            async for _ in stream:
                pass
        await stream.aclose()
        with pytest.raises(ClientStateError):
            await wh.models.list()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [{"x-name": "名前"}, {"x-line": "a\r\nb"}, {"x-nul": "a\x00b"}, {"bad name": "v"}],
)
async def test_8_a_bad_header_from_a_middleware_is_refused_not_retried(
    transport: Backend, header: dict[str, str]
) -> None:
    async def meddle(request: Request, call_next: Handler) -> Response:
        return await call_next(attrs.evolve(request, headers=header))

    fake = FakeWishub([K1])
    async with serving(fake, transport, middleware=[meddle]) as wh:
        with pytest.raises(InvalidRequestError, match="nothing was sent"):
            await wh.models.list()
        assert wh.key_status()[0].failures == 0
    assert fake.count() == 0


@contextmanager
def served_from_a_thread(fake: FakeWishub) -> Iterator[str]:
    """The fake on loopback, served by its own event loop in a thread."""
    ready, stop = threading.Event(), threading.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with fake.serve() as url:
            urls.append(url)
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - a thread's flag has no async event
                await anyio.sleep(0.01)

    thread = threading.Thread(target=anyio.run, args=(serve,))
    thread.start()
    try:
        assert ready.wait(GUARD)
        yield urls[0]
    finally:
        stop.set()
        thread.join(GUARD)


@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
def test_8_a_second_event_loop_is_a_state_error(backend: Backend) -> None:
    import asyncio  # noqa: PLC0415 - two asyncio loops in a row are the point

    fake = FakeWishub([K1])
    with served_from_a_thread(fake) as url:
        wh = AsyncWishub(app_key=K1, base_url=url, backend=backend)
        assert len(asyncio.run(wh.models.list())) == 3
        with pytest.raises(ClientStateError, match="event loop"):
            asyncio.run(wh.models.list())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its first loop is gone: it cannot be closed
            del wh
            gc.collect()


def test_8_a_json_unfriendly_body_is_refused_before_sending() -> None:
    async def main() -> None:
        fake = FakeWishub([K1])
        async with fake.client(app_key=K1) as wh:
            with pytest.raises(InvalidRequestError, match="not JSON"):
                await wh.embeddings.create(model="m", input=[b"bytes"])
        assert fake.count() == 0

    anyio.run(main)


# -- 9. break out of a plain async for gives the slots back ----------------------------------


@pytest.mark.anyio
async def test_9_break_gives_the_slots_back_at_once(transport: Backend) -> None:
    fake = FakeWishub([K1])
    async with serving(fake, transport, max_concurrency=1, per_key_concurrency=1) as wh:
        stream = await wh.chat.completions.create(model=model_of(fake), messages=ASK, stream=True)
        async for _ in stream:
            break
        # No await since the break: the slots are already free.
        assert wh.key_status()[0].in_flight == 0
        assert wh._shared.limiter.borrowed_tokens == 0
        assert stream.closed is False  # the connection closes at the next call
        with anyio.fail_after(GUARD):
            assert await list_models(wh) == 3  # would wait forever for the slot
        await until(lambda: fake.chat.open_streams == 0)
        del stream
        gc.collect()
        await anyio.lowlevel.checkpoint()


# -- 10. bad configuration fails at construction --------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": "5"},
        {"per_key_concurrency": -1},
        {"per_key_concurrency": 0},
        {"max_concurrency": 1.5},
        {"max_concurrency": True},
        {"app_key": 123},
        {"app_key": b"k" * 32},
        {"hooks": 5},
        {"retry": 3},
        {"http_client": 5},
        {"middleware": [5]},
        {"headers": {"x": 5}},
        {"base_url": "https://example.com/v1?x=1"},
        {"base_url": "https://example.com/v1#frag"},
        {"base_url": "https://example.com/v1?"},
        {"base_url": "ftp://example.com/v1"},
        {"base_url": 5},
        {"backend": "curl"},
        {"backend": "aiohttp", "timeout": math.nan},
        {"error_table": {}},
        {"key_policy": {}},
    ],
)
def test_10_bad_configuration_fails_at_construction(options: dict[str, Any]) -> None:
    options = {"app_key": K1, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigurationError):
            AsyncWishub(**options)
        gc.collect()  # no noise from a half-built client


@pytest.mark.anyio
async def test_10_both_backends_agree_on_a_read_timeout(transport: Backend) -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, shape="slow_body", latency=STALL, times=3)
    policy = RetryPolicy(attempts=1)
    async with serving(fake, transport, timeout=Timeout(read=0.2), retry=policy) as wh:
        with anyio.fail_after(GUARD), pytest.raises(APIConnectionError, match="timed out"):
            await wh.models.list()


# -- 11. map and friends raise what they should ---------------------------------------------


def broken_items() -> Iterator[int]:
    yield 1
    yield 2
    raise LookupError("the items ran out of luck")


async def read_as_completed(wh: AsyncWishub, items: Iterator[int]) -> None:
    async with wh.map_as_completed(list_models, items) as outcomes:
        async for _ in outcomes:
            pass


@pytest.mark.anyio
async def test_11_an_iterable_that_raises_comes_out_as_itself() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(LookupError, match="luck"):
            await wh.map(list_models, broken_items())
        with pytest.raises(LookupError, match="luck"):
            await read_as_completed(wh, broken_items())
        assert await list_models(wh) == 3


@pytest.mark.anyio
async def test_11_a_closed_client_raises_instead_of_returning_outcomes() -> None:
    fake = FakeWishub([K1])
    wh = fake.client(app_key=K1)
    await wh.aclose()
    with pytest.raises(ClientStateError):
        await wh.fan_out(list_models)
    with pytest.raises(ClientStateError):
        await wh.map(list_models, range(3))
    with pytest.raises(ClientStateError):
        await wh.check_keys()
    with pytest.raises(ClientStateError):
        async with wh.map_as_completed(list_models, range(3)):
            pass
    assert fake.count() == 0
