"""Resumable batches: a file of requests, sent over every key, each finished exactly once.

    from wishub_async.batch import run_batch

    async with AsyncWishub(app_keys=keys) as wh:
        summary = await run_batch(wh, "requests.jsonl", "results.jsonl", "failed.jsonl")

The requests file holds one OpenAI Batch line per request (``custom_id``, ``method``,
``url``, ``body``). ``run_batch`` checks the whole file before sending anything, then
sends every request not finished yet over all the client's keys and appends each
answer to the results file as it comes. Started again with the same files (after a
crash, a kill or Ctrl-C) it sends only what is not finished: every ``custom_id``
ends up exactly once in the output or the errors file. ``iter_batch`` hands the
results to you instead; ``check_batch`` says what a run would do. See
``docs/batches.md`` for the file formats and the guarantees.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Container, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import Any, Self

import anyio
import attrs

from ._batchfiles import (
    BatchFiles,
    BatchLine,
    IdSet,
    Scan,
    pending_lines,
    scan_requests,
    scan_results,
)
from ._client import AsyncWishub
from ._errors import DEFAULT_ERROR_TABLE, request_id
from ._fanout import Outcome, OutcomeStream
from ._http import Response
from ._status import KeyState
from ._text import excerpt
from .exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BatchFileError,
    ClientStateError,
    InvalidRequestError,
    KeyUnavailableError,
    ResponseValidationError,
    WishubError,
)

__all__ = [
    "ENDPOINTS",
    "BatchPlan",
    "BatchResponse",
    "BatchResult",
    "BatchStatus",
    "BatchSummary",
    "check_batch",
    "iter_batch",
    "run_batch",
]

ENDPOINTS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("POST", "/v1/chat/completions"): "/chat/completions",
        ("POST", "/v1/embeddings"): "/embeddings",
    }
)
"""``(method, url)`` of a batch line -> the path it is sent to, below the base URL."""

StrPath = str | os.PathLike[str]


class BatchStatus(enum.Enum):
    """How one request of a batch ended."""

    DONE = "done"
    """Answered (2xx): a line in the output file."""
    FAILED = "failed"
    """Failed for good, through no fault of a key or the network: a line in the errors
    file (or in the output file when there is no errors file). The platform refused
    the request (400, 404, ...), or answered 2xx with a body that is not JSON."""
    DEFERRED = "deferred"
    """Not finished, and not written: the SDK's retries ran out on something that
    can pass (a rate limit, a quota, a rejected or resting key, a 5xx, the network).
    The next run with the same files sends it again."""


@attrs.frozen
class BatchResponse:
    """The answer to one request, as the results line holds it.

    Attributes:
        status_code: the HTTP status.
        request_id: the platform's request id (from the headers), if it sent one.
        body: the body: parsed JSON, or the text when it was not JSON.
    """

    status_code: int
    request_id: str | None
    body: Any


def _new_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


@attrs.frozen
class BatchResult:
    """How one request of a batch ended.

    Attributes:
        custom_id: the request's ``custom_id``.
        line: its line number in the requests file.
        status: done, failed (for good) or deferred (sent again by the next run).
        response: the answer (an error's answer too), or None when none came.
        error: what went wrong, or None.
        attempts: HTTP attempts the request took (retries and key moves included).
        label: the label of the key used last.
        prompt_tokens: tokens in, from the answer's ``usage``.
        completion_tokens: tokens out, from the answer's ``usage``.
        id: this result's own id (``batch_req_…``), unique to the line written.
    """

    custom_id: str
    line: int
    status: BatchStatus
    response: BatchResponse | None = None
    error: Exception | None = None
    attempts: int = 0
    label: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    id: str = attrs.field(factory=_new_id)

    @property
    def ok(self) -> bool:
        """Whether the request was answered (2xx)."""
        return self.status is BatchStatus.DONE

    def to_dict(self) -> dict[str, Any]:
        """The results line: ``{"id", "custom_id", "response", "error"}``.

        ``error`` is None, or ``{"type", "code", "message", "class", "label"}``: the
        platform's error type and code (None when it sent none), the human message,
        the exception class, and the label of the key (never the key).
        """
        response = self.response
        return {
            "id": self.id,
            "custom_id": self.custom_id,
            "response": None
            if response is None
            else {
                "status_code": response.status_code,
                "request_id": response.request_id,
                "body": response.body,
            },
            "error": None if self.error is None else _error_fields(self.error),
        }


def _error_fields(error: Exception) -> dict[str, Any]:
    api = error if isinstance(error, APIError) else None
    message = getattr(error, "message", None) or getattr(error, "reason", None) or str(error)
    return {
        "type": None if api is None else api.type,
        "code": None if api is None else api.code,
        "message": message,
        "class": type(error).__name__,
        "label": getattr(error, "label", None),
    }


@attrs.frozen
class BatchPlan:
    """What a run of a batch would do (``check_batch``, ``wishub batch --dry-run``).

    Attributes:
        total: requests in the requests file.
        done: requests already answered (in the results files).
        failed: requests already failed for good (in the results files).
        pending: requests a run would send.
        urls: requests to send, per URL.
        models: requests to send, per model.
        torn: bytes of a torn last line in the results files (a run cuts them off).
    """

    total: int
    done: int
    failed: int
    pending: int
    urls: Mapping[str, int]
    models: Mapping[str, int]
    torn: int = 0


@attrs.frozen
class BatchSummary:
    """Where a batch stands: the whole file, and what this run did.

    ``run_batch`` returns it, and passes one to ``on_progress`` after each result.

    Attributes:
        total: requests in the requests file.
        done_before: requests answered before this run.
        failed_before: requests failed for good before this run.
        done: requests answered in this run.
        failed: requests failed for good in this run.
        deferred: requests of this run left unfinished, to be sent by the next run.
        retried: requests of this run that took more than one attempt.
        prompt_tokens: tokens in, over this run's answers.
        completion_tokens: tokens out, over this run's answers.
        elapsed: seconds this run has taken (wall time).
        stopped: why the run stopped before the end of the file, or None.
    """

    total: int
    done_before: int = 0
    failed_before: int = 0
    done: int = 0
    failed: int = 0
    deferred: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed: float = 0.0
    stopped: str | None = None

    @property
    def remaining(self) -> int:
        """Requests not finished (neither answered nor failed for good)."""
        finished = self.done_before + self.failed_before + self.done + self.failed
        return self.total - finished

    @property
    def complete(self) -> bool:
        """Whether every request is finished (answered, or failed for good)."""
        return self.remaining == 0

    @property
    def rate(self) -> float:
        """Requests finished per second in this run."""
        return (self.done + self.failed) / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``remaining`` and ``rate`` as a JSON-ready dict."""
        return {**attrs.asdict(self), "remaining": self.remaining, "rate": self.rate}


class _Tally:
    """A run's counts as they grow; a ``BatchSummary`` is made of them when asked."""

    def __init__(self, scan: Scan) -> None:
        self._scan = scan
        self._counts: Counter[str] = Counter()

    def count(self, result: BatchResult) -> None:
        counts = self._counts
        counts[result.status.value] += 1  # "done", "failed", "deferred"
        counts["retried"] += result.attempts > 1
        counts["prompt_tokens"] += result.prompt_tokens
        counts["completion_tokens"] += result.completion_tokens

    def summary(self, elapsed: float, stopped: str | None = None) -> BatchSummary:
        scan = self._scan
        return BatchSummary(
            scan.total, scan.done, scan.failed, **self._counts, elapsed=elapsed, stopped=stopped
        )


# -- the three ways in -------------------------------------------------------------------


async def check_batch(
    input_path: StrPath, output_path: StrPath | None = None, errors_path: StrPath | None = None
) -> BatchPlan:
    """What a run would do, without sending or writing anything.

    The whole requests file is checked as ``run_batch`` checks it; the results files
    (if given and present) say what is finished already.

    Raises:
        BatchFileError: a file is malformed (the error names each bad line).
    """
    paths = _paths(input_path, output_path, errors_path)
    return await anyio.to_thread.run_sync(_plan, *paths, abandon_on_cancel=True)


def _plan(input_path: str, output_path: str | None, errors_path: str | None) -> BatchPlan:
    done, failed = IdSet(), IdSet()
    torn = sum(scan_results(path, done, failed).torn for path in (output_path, errors_path) if path)
    scan = scan_requests(input_path, ENDPOINTS, done=done, failed=failed)
    return BatchPlan(
        scan.total,
        scan.done,
        scan.failed,
        len(scan.pending),
        dict(scan.urls),
        dict(scan.models),
        torn,
    )


def iter_batch(
    wh: AsyncWishub,
    input_path: StrPath,
    *,
    done: Container[str] = (),
    concurrency: int | None = None,
) -> AbstractAsyncContextManager[AsyncIterator[BatchResult]]:
    """Send a batch and hand out each ``BatchResult`` as it ends (no files written).

    Use it as an async context manager, like ``map_as_completed``:

        async with iter_batch(wh, "requests.jsonl") as results:
            async for result in results:
                print(result.custom_id, result.status)

    The whole file is checked on entry (``BatchFileError`` before anything is
    sent). Requests whose ``custom_id`` is in ``done`` are skipped: keep the ids you
    have stored and pass them back to resume. Results come in completion order;
    leaving the block early cancels the requests still running. At most
    ``concurrency`` requests (default: the client's ``max_concurrency``) are out at
    once, in flight or answered and waiting for you: a slow reader slows the sending.
    """
    return _iterate(wh, os.fspath(input_path), done, concurrency)


@asynccontextmanager
async def _iterate(
    wh: AsyncWishub, input_path: str, done: Container[str], concurrency: int | None
) -> AsyncIterator[AsyncIterator[BatchResult]]:
    width = _width(wh, concurrency)
    scan = await anyio.to_thread.run_sync(
        functools.partial(scan_requests, input_path, ENDPOINTS, done=done), abandon_on_cancel=True
    )
    async with _sending(wh, input_path, scan.pending, width) as results:
        yield results


async def run_batch(
    wh: AsyncWishub,
    input_path: StrPath,
    output_path: StrPath,
    errors_path: StrPath | None = None,
    *,
    on_progress: Callable[[BatchSummary], object] | None = None,
    fsync_interval: float = 1.0,
    concurrency: int | None = None,
) -> BatchSummary:
    """Run a batch: send what is not finished, append each result to its file.

    Exactly once: each request ends as one line, in the output file (answered) or
    the errors file (failed for good; the output file when ``errors_path`` is None).
    Run it again with the same files after any stop (an exception, a cancellation,
    a kill) and it sends only the requests that are not finished; a torn last line
    is cut off first. Requests left unfinished by a rate limit, a key or the network
    (``BatchStatus.DEFERRED``) are sent by the next run.

    Args:
        wh: the client; requests are spread over all its keys (or the key of a
            ``with_key`` view), ``max_concurrency`` at a time.
        input_path: the requests file (OpenAI Batch lines).
        output_path: the results file; created if missing, appended to.
        errors_path: where failures go, if not to the output file.
        on_progress: called with a ``BatchSummary`` once the files are checked,
            then after each result.
        fsync_interval: seconds between flushes of the results to the disk
            (``fsync``); 0 flushes after every line. A line is safe from a crash
            of the process as soon as it is written; this bounds what a power cut
            can take (to be sent again).
        concurrency: requests out at once, in flight or answered and not yet
            written (default: the client's ``max_concurrency``). A kill sends at
            most this many again.

    Raises:
        BatchFileError: a file is malformed, or in use by another run; nothing sent.
        ClientStateError: the client was closed during the run.
    """
    if not isinstance(fsync_interval, int | float) or not 0 <= fsync_interval < math.inf:
        raise InvalidRequestError(f"fsync_interval must be seconds >= 0, got {fsync_interval!r}")
    width = _width(wh, concurrency)
    started = time.monotonic()
    input_file, output_file, errors_file = _paths(input_path, output_path, errors_path)
    if output_file is None:
        raise InvalidRequestError("run_batch needs an output path")
    files = BatchFiles(output_file, errors_file)
    try:
        scan = await anyio.to_thread.run_sync(
            functools.partial(files.scan, input_file, ENDPOINTS), abandon_on_cancel=True
        )
    except BaseException:
        files.discard_if_new()
        raise
    tally = _Tally(scan)
    stopped = None
    if on_progress is not None:
        on_progress(tally.summary(time.monotonic() - started))
    try:
        async with _sending(wh, input_file, scan.pending, width) as results:
            last_sync = time.monotonic()
            async for result in results:
                if result.status is not BatchStatus.DEFERRED:
                    files.write(_line(result), ok=result.ok)
                now = time.monotonic()
                if files.dirty and now - last_sync >= fsync_interval:
                    await anyio.to_thread.run_sync(files.sync)
                    last_sync = now
                tally.count(result)
                stopped = _stop_reason(wh, result)
                if on_progress is not None:
                    on_progress(tally.summary(now - started, stopped))
                if stopped:
                    break
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(files.close)
    return tally.summary(time.monotonic() - started, stopped)


def _paths(
    input_path: StrPath, output_path: StrPath | None, errors_path: StrPath | None
) -> tuple[str, str | None, str | None]:
    """The paths as strings; ``BatchFileError`` if two of them are the same file."""
    paths = (
        os.fspath(input_path),
        None if output_path is None else os.fspath(output_path),
        None if errors_path is None else os.fspath(errors_path),
    )
    roles = ("the requests file", "the output file", "the errors file")
    seen: dict[str, str] = {}
    for role, path in zip(roles, paths, strict=True):
        if path is None:
            continue
        resolved = os.path.realpath(path)
        if resolved in seen:
            raise BatchFileError(path, [(None, f"is also {seen[resolved]}: give each its own")])
        seen[resolved] = role
    return paths


def _width(wh: AsyncWishub, concurrency: object) -> int:
    """How many requests may be out at once (``InvalidRequestError`` if not a count)."""
    if concurrency is None:
        return wh._shared.max_concurrency  # noqa: SLF001 - the width of its fan-outs
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidRequestError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


def _stop_reason(wh: AsyncWishub, result: BatchResult) -> str | None:
    """Why the run should stop now, if it should: no key can ever answer again.

    Raises:
        ClientStateError: the client was closed.
    """
    if isinstance(result.error, ClientStateError):
        raise result.error
    if not isinstance(result.error, AuthenticationError | KeyUnavailableError):
        return None
    states = [status.state for status in wh.key_status()]
    if states and all(state is KeyState.QUARANTINED for state in states):
        return "every AppKey was rejected; fix the keys (see `wishub models`) and run again"
    return None


# -- sending -------------------------------------------------------------------------------


@asynccontextmanager
async def _sending(
    wh: AsyncWishub, input_path: str, pending: Any, concurrency: int
) -> AsyncIterator[AsyncIterator[BatchResult]]:
    """Send the pending lines over the client's keys; yield their results as they end."""
    lines = _Lines(pending_lines(input_path, pending, ENDPOINTS), concurrency)
    async with wh.map_as_completed(lines.send, lines) as outcomes:
        yield _Results(outcomes, lines)


class _Lines:
    """The lines of one run: handed to the fan-out, sent, matched to their outcomes.

    At most ``limit`` lines are out at once, sent or answered but not yet handed on: a
    line takes a token before it is sent and gives it back when its result is handed
    on. So a slow reader holds the sending back (memory stays flat), and a process
    killed between an answer and its line loses at most ``limit`` answers.
    """

    def __init__(self, lines: Iterator[BatchLine], limit: int) -> None:
        self._lines = lines
        self._out: dict[int, BatchLine] = {}  # by index in the fan-out
        self._tokens = anyio.Semaphore(limit)

    def __iter__(self) -> Iterator[BatchLine]:
        for index, line in enumerate(self._lines):
            self._out[index] = line
            yield line

    async def send(self, view: AsyncWishub, line: BatchLine) -> Response:
        """Send one line's body (the fan-out's call), once a token is free."""
        await self._tokens.acquire()
        return await view.request(line.method, line.path, json=line.body, model=line.model)

    def handed_on(self, index: int) -> BatchLine:
        """The line whose outcome has this index; its token is free again."""
        self._tokens.release()
        return self._out.pop(index)


class _Results:
    """An async iterator of ``BatchResult``s over the fan-out's outcomes."""

    def __init__(self, outcomes: OutcomeStream[Response], lines: _Lines) -> None:
        self._outcomes = outcomes
        self._lines = lines

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BatchResult:
        # Outcomes that are in already are taken without a trip through the event
        # loop: the writer keeps up with any number of senders.
        try:
            outcome = self._outcomes.receive_nowait()
        except anyio.WouldBlock:
            outcome = await anext(self._outcomes)
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        return _result(self._lines.handed_on(outcome.index), outcome)


def _result(line: BatchLine, outcome: Outcome[Response]) -> BatchResult:
    """The ``BatchResult`` of one outcome; an error that is no ``WishubError`` is raised."""
    error = outcome.error
    if error is None:
        response = outcome.unwrap()
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            body = response.content.decode("utf-8", "replace")
            error = ResponseValidationError("the answer is not JSON", body_excerpt=excerpt(body))
        answer = BatchResponse(response.status_code, request_id(response.headers), body)
        if error is not None:
            status = BatchStatus.FAILED
            return BatchResult(
                line.custom_id, line.number, status, answer, error, outcome.attempts, outcome.label
            )
        prompt, completion = _usage(body)
        return BatchResult(
            line.custom_id,
            line.number,
            BatchStatus.DONE,
            answer,
            None,
            outcome.attempts,
            outcome.label,
            prompt,
            completion,
        )
    if not isinstance(error, WishubError):
        raise error  # a bug (in a middleware, say): stop rather than record it per line
    replied = (
        BatchResponse(error.status_code, error.request_id, error.body)
        if isinstance(error, APIError)
        else None
    )
    return BatchResult(
        line.custom_id,
        line.number,
        _status_of(error),
        replied,
        error,
        outcome.attempts,
        outcome.label,
    )


def _status_of(error: WishubError) -> BatchStatus:
    """``FAILED`` when the request itself was refused; ``DEFERRED`` when it may pass later.

    The error table decides for an ``APIError``: an error the SDK retries (5xx, rate
    limit) or one scoped to a key (rejected key, quota) is deferred; any other
    (400, 403, 404, ...) is a failure for good. No answer at all (the network, no
    usable key, a closed client) is deferred; an answer that is not JSON fails.
    """
    if isinstance(error, APIError):
        rule = error.rule or DEFAULT_ERROR_TABLE.rule_for(error.type, error.status_code)
        passing = rule.retry or rule.key_scoped or error.should_retry is True
        return BatchStatus.DEFERRED if passing else BatchStatus.FAILED
    if isinstance(error, APIConnectionError | KeyUnavailableError | ClientStateError):
        return BatchStatus.DEFERRED
    return BatchStatus.FAILED


def _usage(body: Any) -> tuple[int, int]:
    """(tokens in, tokens out) from a body's ``usage`` (OpenAI or DashScope names)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    out = _count(usage.get("completion_tokens")) or _count(usage.get("output_tokens"))
    tokens_in = _count(usage.get("prompt_tokens")) or _count(usage.get("input_tokens"))
    return tokens_in or max(0, _count(usage.get("total_tokens")) - out), out


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"))


def _line(result: BatchResult) -> bytes:
    """The results line of ``result``: compact JSON and a newline, as UTF-8."""
    record = result.to_dict()
    try:
        return (_COMPACT.encode(record) + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate (from a \\ud800 escape): keep it escaped
        return (_COMPACT_ASCII.encode(record) + "\n").encode()
