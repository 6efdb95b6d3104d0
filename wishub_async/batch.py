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

import functools
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Container, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import Any, Self

import anyio

from ._batchfiles import BatchFiles, BatchLine, IdSet, pending_lines, scan_requests, scan_results
from ._batchresults import (
    BatchPlan,
    BatchResponse,
    BatchResult,
    BatchStatus,
    BatchSummary,
    Tally,
    result_of,
    results_line,
)
from ._client import AsyncWishub
from ._fanout import OutcomeStream
from ._http import Response
from ._status import KeyState
from .exceptions import (
    AuthenticationError,
    BatchFileError,
    ClientStateError,
    InvalidRequestError,
    KeyUnavailableError,
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
        ("POST", "/v1/rerank"): "/rerank",
        ("POST", "/v1/reranks"): "/reranks",
    }
)
"""``(method, url)`` of a batch line -> the path it is sent to, below the base URL."""

StrPath = str | os.PathLike[str]


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
    tally = Tally(scan)
    stopped = None
    if on_progress is not None:
        on_progress(tally.summary(time.monotonic() - started))
    try:
        async with _sending(wh, input_file, scan.pending, width) as results:
            last_sync = time.monotonic()
            async for result in results:
                if result.status is not BatchStatus.DEFERRED:
                    files.write(results_line(result), ok=result.ok)
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
        return wh.max_concurrency
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
        return result_of(self._lines.handed_on(outcome.index), outcome)
