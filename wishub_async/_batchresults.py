"""What a batch's requests came to: results, summaries, and their lines in the files.

``result_of`` turns the fan-out's ``Outcome`` of one line into a ``BatchResult``
(done, failed for good, or deferred, as the error table says), ``results_line``
writes it as one line of JSON, and ``Tally`` counts a run's results into
``BatchSummary`` snapshots. The public classes are re-exported by
``wishub_async.batch``.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from ._batchfiles import BatchLine, Scan
from ._errors import DEFAULT_ERROR_TABLE, request_id
from ._fanout import Outcome
from ._http import Response
from ._text import excerpt
from .exceptions import (
    APIConnectionError,
    APIError,
    ClientStateError,
    KeyUnavailableError,
    ResponseValidationError,
    WishubError,
)

__all__ = [
    "BatchPlan",
    "BatchResponse",
    "BatchResult",
    "BatchStatus",
    "BatchSummary",
    "Tally",
    "result_of",
    "results_line",
    "usage",
]


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


class Tally:
    """A run's counts as they grow; a ``BatchSummary`` is made of them when asked."""

    def __init__(self, scan: Scan) -> None:
        self._scan = scan
        self._counts: Counter[str] = Counter()

    def count(self, result: BatchResult) -> None:
        """Count one result in."""
        counts = self._counts
        counts[result.status.value] += 1  # "done", "failed", "deferred"
        counts["retried"] += result.attempts > 1
        counts["prompt_tokens"] += result.prompt_tokens
        counts["completion_tokens"] += result.completion_tokens

    def summary(self, elapsed: float, stopped: str | None = None) -> BatchSummary:
        """The counts so far, as a ``BatchSummary``."""
        scan = self._scan
        return BatchSummary(
            scan.total, scan.done, scan.failed, **self._counts, elapsed=elapsed, stopped=stopped
        )


def result_of(line: BatchLine, outcome: Outcome[Response]) -> BatchResult:
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
        prompt, completion = usage(body)
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


def usage(body: Any) -> tuple[int, int]:
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


def results_line(result: BatchResult) -> bytes:
    """The results line of ``result``: compact JSON and a newline, as UTF-8."""
    record = result.to_dict()
    try:
        return (_COMPACT.encode(record) + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate (from a \\ud800 escape): keep it escaped
        return (_COMPACT_ASCII.encode(record) + "\n").encode()
