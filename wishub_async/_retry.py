"""Retries: the policy, the per-error decision, and the loop around each attempt."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

import anyio
import attrs

from ._errors import DEFAULT_ERROR_TABLE, ErrorTable, KeyEffect
from ._keys import AppKey, KeyRing, MustWait
from ._transport import Request, Response
from .exceptions import APIConnectionError, APIError, APITimeoutError, KeyUnavailableError

__all__ = ["CallRecord", "RetryPolicy", "send_with_retries", "set_instant_waits"]

log = logging.getLogger("wishub_async")

_instant = False


def set_instant_waits(instant: bool) -> None:
    """Make every retry and cooling wait instant (for tests); see ``testing.instant_waits``."""
    global _instant  # noqa: PLW0603 - one process-wide test switch, like stamina's
    _instant = instant


async def _sleep(seconds: float) -> None:
    await anyio.sleep(0 if _instant else seconds)


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How calls are retried. Frozen: change it with ``attrs.evolve``.

    Attributes:
        attempts: attempts in all on the same key, first one included (>= 1).
        initial_wait: the first backoff wait, in seconds; it doubles each retry.
        max_wait: the cap of one backoff wait.
        jitter: fraction of each backoff wait that is random (0 = none, 1 = full).
        max_retry_after: the longest Retry-After we honour; longer ones are capped.
        deadline: seconds for the whole call (queueing, waits and attempts), or None.
        retry_timeouts: whether a read timeout is retried.
        retry_connection_errors: whether refused, reset or dropped connections are.
        quota_cooldown: how long a key rests after ``insufficient_quota``.
        server_error_cooldown: how long a key rests after 3 server errors in a row.
        error_table: the error-type table deciding class, retry and key effect.
    """

    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    initial_wait: float = attrs.field(default=0.5, validator=_positive)
    max_wait: float = attrs.field(default=8.0, validator=_positive)
    jitter: float = attrs.field(
        default=1.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)
    deadline: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    retry_timeouts: bool = True
    retry_connection_errors: bool = True
    quota_cooldown: float = attrs.field(default=300.0, validator=_positive)
    server_error_cooldown: float = attrs.field(default=1.0, validator=_positive)
    error_table: ErrorTable = DEFAULT_ERROR_TABLE

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based): capped exponential + jitter."""
        base = min(self.max_wait, self.initial_wait * 2 ** (retry - 1))
        return base * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto

    def decide(self, error: APIError | APIConnectionError, retry: int) -> float | None:
        """The stamina-style hook: None for "do not retry", else seconds to wait first."""
        if isinstance(error, APIError):
            allowed = self.error_table.rule_for(error.type, error.status_code).retry
            if error.should_retry is not None:
                allowed = error.should_retry
            if not allowed:
                return None
            if error.retry_after is not None:
                return min(error.retry_after, self.max_retry_after)
        elif isinstance(error, APITimeoutError):
            if not self.retry_timeouts:
                return None
        elif not self.retry_connection_errors:
            return None
        return self.backoff(retry)


@attrs.define
class CallRecord:
    """What one logical call did: attempts, the last key used, its last error."""

    attempts: int = 0
    key: str | None = None
    error: Exception | None = None


Attempt = Callable[[Request, AppKey], Awaitable[Response]]


async def send_with_retries(  # noqa: PLR0913 - the loop's collaborators, all keyword-only
    request: Request,
    attempt: Attempt,
    *,
    ring: KeyRing,
    pinned: AppKey | None,
    policy: RetryPolicy,
    limiter: anyio.CapacityLimiter,
    record: CallRecord,
) -> Response:
    """Run ``attempt`` until it succeeds, the policy gives up, or the deadline passes."""
    if policy.deadline is None:
        return await _loop(request, attempt, ring, pinned, policy, limiter, record, math.inf)
    deadline = time.monotonic() + policy.deadline
    with anyio.move_on_after(policy.deadline):
        return await _loop(request, attempt, ring, pinned, policy, limiter, record, deadline)
    raise APITimeoutError(
        f"deadline of {policy.deadline:g}s passed after {record.attempts} attempt(s)"
        + (f"; last error: {record.error}" if record.error else ""),
        key=record.key,
    ) from record.error


async def _loop(  # noqa: PLR0913 - private; the arguments of send_with_retries
    request: Request,
    attempt: Attempt,
    ring: KeyRing,
    pinned: AppKey | None,
    policy: RetryPolicy,
    limiter: anyio.CapacityLimiter,
    record: CallRecord,
    deadline: float,
) -> Response:
    moved_from: list[AppKey] = []
    retries = 0
    while True:
        await _acquire(limiter)
        try:
            key = await _choose(ring, pinned, moved_from, deadline)
            record.attempts += 1
            record.key = key.label
            key.in_flight += 1
            key.assigned += 1
            started = time.monotonic()
            try:
                if key.limiter is None:
                    response = await attempt(request, key)
                else:
                    await _acquire(key.limiter)
                    try:
                        response = await attempt(request, key)
                    finally:
                        key.limiter.release()
            except (APIError, APIConnectionError) as exc:
                failure = record.error = exc
            else:
                key.record_success(time.monotonic() - started)
                response.attempts = record.attempts
                return response
            finally:
                key.in_flight -= 1
        finally:
            limiter.release()
        effect = _effect(failure, policy)
        wait = policy.decide(failure, retries + 1)
        key.record_failure(
            _error_name(failure),
            effect,
            time.monotonic() - started,
            cool_for=(
                policy.quota_cooldown
                if effect is KeyEffect.LONG_COOL
                else (wait if wait is not None else policy.backoff(retries + 1))
            ),
            server_error_cooldown=policy.server_error_cooldown,
        )
        if pinned is None and effect is not KeyEffect.NONE and _has_other(ring, key, moved_from):
            moved_from.append(key)
            _log(request, key, failure, "moving to another key", record.attempts)
            continue
        retries += 1
        if wait is None or retries >= policy.attempts:
            raise failure
        if time.monotonic() + wait > deadline:
            _log(request, key, failure, f"not waiting {wait:.2f}s past the deadline", record.attempts)
            raise failure
        _log(request, key, failure, f"retrying in {wait:.2f}s", record.attempts)
        await _sleep(wait)


async def _acquire(limiter: anyio.CapacityLimiter) -> None:
    """Take a token; go through the event loop only when there is none to take.

    ``async with limiter`` always yields to the event loop, even with tokens to spare:
    a full scheduler round trip per request. The attempt that follows yields anyway.
    """
    try:
        limiter.acquire_nowait()
    except anyio.WouldBlock:
        await limiter.acquire()


async def _choose(
    ring: KeyRing, pinned: AppKey | None, moved_from: list[AppKey], deadline: float
) -> AppKey:
    while True:
        try:
            return ring.pick(pinned, moved_from)
        except MustWait as wait:
            if time.monotonic() + wait.seconds > deadline:
                raise KeyUnavailableError(
                    ring.describe([wait.key], time.monotonic())
                    + f"; its cooling ({wait.seconds:.1f}s) outlasts the deadline",
                    key=wait.key.label,
                ) from None
            log.debug("waiting %.2fs for cooling key %s", wait.seconds, wait.key.label)
            await _sleep(wait.seconds)
            wait.key.end_cooling()


def _effect(error: APIError | APIConnectionError, policy: RetryPolicy) -> KeyEffect:
    if isinstance(error, APIError):
        return policy.error_table.rule_for(error.type, error.status_code).key_effect
    return KeyEffect.NONE


def _has_other(ring: KeyRing, key: AppKey, moved_from: list[AppKey]) -> bool:
    now = time.monotonic()
    return any(
        other is not key
        and other not in moved_from
        and not other.quarantined
        and other.cooling_until <= now
        for other in ring.keys
    )


def _error_name(error: APIError | APIConnectionError) -> str:
    if isinstance(error, APIError) and error.type:
        return error.type
    return type(error).__name__


def _log(
    request: Request,
    key: AppKey,
    error: APIError | APIConnectionError,
    action: str,
    attempt: int,
) -> None:
    log.debug(
        "%s %s on key %s: attempt %d failed with %s; %s",
        request.method,
        request.path,
        key.label,
        attempt,
        _error_name(error),
        action,
    )
