"""Retries: the policy, the per-error decision, and the loop around each attempt."""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

import anyio
import attrs

from ._errors import DEFAULT_ERROR_TABLE, ErrorRule, ErrorTable, KeyEffect, error_name
from ._events import Hooks, KeyStateChanged, RequestEnded, RetryScheduled, emit
from ._keys import AppKey, KeyRing, KeyState, MustWait
from ._transport import Request, Response
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    WishubError,
)

__all__ = [
    "CallRecord",
    "RetryPolicy",
    "instant_waits_enabled",
    "send_with_retries",
    "set_instant_waits",
]

log = logging.getLogger("wishub_async")

_instant = False


def set_instant_waits(instant: bool) -> None:
    """Make every retry and cooling wait instant (for tests); see ``testing.instant_waits``."""
    global _instant  # noqa: PLW0603 - one process-wide test switch, like stamina's
    _instant = instant


def instant_waits_enabled() -> bool:
    """Whether the test switch is on."""
    return _instant


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
        max_key_moves: how often one call may move to another key after a rate limit
            or a quota error, on top of ``attempts`` (a limit may be platform-wide).
            Moving away from a rejected key (quarantined) is not counted: each wrong
            key is met at most once.
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
    max_key_moves: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    quota_cooldown: float = attrs.field(default=300.0, validator=_positive)
    server_error_cooldown: float = attrs.field(default=1.0, validator=_positive)
    error_table: ErrorTable = DEFAULT_ERROR_TABLE

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based): capped exponential + jitter."""
        base = min(self.max_wait, self.initial_wait * 2.0 ** (retry - 1))
        return base * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto

    def rule(self, error: APIError) -> ErrorRule:
        """The error-table row for ``error``: the one that classified it, else a lookup."""
        if error.rule is not None:
            return error.rule
        return self.error_table.rule_for(error.type, error.status_code)

    def decide(self, error: APIError | APIConnectionError, retry: int) -> float | None:
        """The stamina-style hook: None for "do not retry", else seconds to wait first."""
        if isinstance(error, APIError):
            allowed = self.rule(error).retry
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


async def send_with_retries(
    request: Request,
    attempt: Attempt,
    *,
    ring: KeyRing,
    pinned: AppKey | None,
    policy: RetryPolicy,
    limiter: anyio.CapacityLimiter,
    record: CallRecord,
    hooks: Hooks,
    probe: bool = False,
) -> Response:
    """Run ``attempt`` until it succeeds, the policy gives up, or the deadline passes.

    A streamed response keeps its concurrency slots, and its key's health and the
    request-end hook wait, until the stream is closed. With ``probe``, a pinned key is
    used even while quarantined or cooling.
    """
    call = _Call(request, attempt, ring, pinned, policy, limiter, record, hooks, probe)
    return await call.run()


@attrs.define(eq=False)
class _Slot:
    """The concurrency one attempt holds: a global token, then its key's."""

    limiter: anyio.CapacityLimiter
    key: AppKey | None = None
    holds_global: bool = False
    holds_key: bool = False

    async def take_global(self) -> None:
        await self._take(self.limiter)
        self.holds_global = True

    async def take_key(self, key: AppKey) -> None:
        self.key = key
        key.in_flight += 1
        key.assigned += 1
        if key.limiter is not None:
            await self._take(key.limiter)
            self.holds_key = True

    async def _take(self, limiter: anyio.CapacityLimiter) -> None:
        """Take a token; go through the event loop only when there is none to take.

        ``await limiter.acquire...()`` always yields to the event loop, even with
        tokens to spare: a scheduler round trip per request. The attempt that follows
        yields anyway, so cancellation is still checked promptly.
        """
        try:
            limiter.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            await limiter.acquire_on_behalf_of(self)

    def release(self) -> None:
        key, self.key = self.key, None
        if key is not None:
            key.in_flight -= 1
            if self.holds_key and key.limiter is not None:
                key.limiter.release_on_behalf_of(self)
        self.holds_key = False
        if self.holds_global:
            self.holds_global = False
            self.limiter.release_on_behalf_of(self)


@attrs.define
class _Call:
    """One logical call: its attempts, key moves, waits and deadline."""

    request: Request
    attempt: Attempt
    ring: KeyRing
    pinned: AppKey | None
    policy: RetryPolicy
    limiter: anyio.CapacityLimiter
    record: CallRecord
    hooks: Hooks
    probe: bool
    deadline: float = math.inf
    started: float = 0.0
    moved_from: list[AppKey] = attrs.Factory(list)
    cooling_moves: int = 0  # moves away from rate-limited or quota-less keys

    async def run(self) -> Response:
        self.started = time.monotonic()
        try:
            response = await self._bounded()
        except WishubError as error:
            self._ended(error.status_code if isinstance(error, APIError) else None, error)
            raise
        if not self.request.stream:
            self._ended(response.status_code, None)
        return response

    async def _bounded(self) -> Response:
        budget = self.policy.deadline
        if budget is None:
            return await self._loop()
        self.deadline = self.started + budget
        with anyio.move_on_after(budget):
            return await self._loop()
        raise APITimeoutError(
            f"deadline of {budget:g}s passed after {self.record.attempts} attempt(s)"
            + (f"; last error: {self.record.error}" if self.record.error else ""),
            key=self.record.key,
        ) from self.record.error

    async def _loop(self) -> Response:
        policy, record = self.policy, self.record
        retries = 0
        while True:
            key = await self._choose()
            record.key = key.label
            slot = _Slot(self.limiter)
            try:
                # The key's own token first: a call queued for a busy key must not sit
                # on a global slot that another key's call could use.
                await slot.take_key(key)
                await slot.take_global()
                record.attempts += 1
                started = time.monotonic()
                response = await self.attempt(self.request, key)
            except (APIError, APIConnectionError) as exc:
                slot.release()
                failure = record.error = exc
            except BaseException:
                slot.release()
                raise
            else:
                response.attempts = record.attempts
                latency = time.monotonic() - started
                if self.request.stream:
                    response.on_done(functools.partial(self._stream_done, slot, key, latency))
                else:
                    slot.release()
                    self._succeeded(key, latency)
                return response
            effect = _effect(failure, policy)
            wait = policy.decide(failure, retries + 1)
            self._failed(
                key, failure, effect, time.monotonic() - started, wait=wait, retry=retries + 1
            )
            if (
                self.pinned is None
                and effect is not KeyEffect.NONE
                and (effect is KeyEffect.QUARANTINE or self.cooling_moves < policy.max_key_moves)
                and self._has_other(key)
            ):
                self.cooling_moves += effect is not KeyEffect.QUARANTINE
                self.moved_from.append(key)
                self._retrying(key, failure, 0.0, moved=True)
                continue
            retries += 1
            if wait is None or retries >= policy.attempts:
                raise failure
            if time.monotonic() + wait > self.deadline:
                self._log(key, failure, f"not waiting {wait:.2f}s past the deadline")
                raise failure
            self._retrying(key, failure, wait, moved=False)
            await _sleep(wait)

    def _stream_done(
        self, slot: _Slot, key: AppKey, latency: float, error: BaseException | None
    ) -> None:
        """A streamed body was closed: free its slots, then settle health and hooks."""
        slot.release()
        if isinstance(error, APIError | APIConnectionError):
            effect = _effect(error, self.policy)
            self._failed(key, error, effect, latency, wait=self.policy.decide(error, 1), retry=1)
            self._ended(200, error)
        else:
            self._succeeded(key, latency)
            self._ended(200, None)

    async def _choose(self) -> AppKey:
        """The key for the next attempt, waiting out a short cooling if need be.

        A cooling longer than ``max_retry_after``, or past the deadline, is not waited
        out: the call fails at once with the key's last error, marked as not sent.
        """
        if self.probe and self.pinned is not None:
            return self.pinned
        while True:
            try:
                return self.ring.pick(self.pinned, self.moved_from)
            except MustWait as wait:
                key, seconds = wait.key, wait.seconds
                if seconds > self.policy.max_retry_after:
                    raise key.refusal(f"cooling for another {seconds:.0f}s") from None
                if time.monotonic() + seconds > self.deadline:
                    raise key.refusal(
                        f"cooling for another {seconds:.1f}s, past the call's deadline"
                    ) from None
                log.debug("waiting %.2fs for cooling key %s", seconds, key.label)
                until = key.cooling_until
                await _sleep(seconds)
                if key.cooling_until == until:  # not cooled again meanwhile
                    key.end_cooling()

    def _has_other(self, key: AppKey) -> bool:
        now = time.monotonic()
        return any(
            other is not key
            and other not in self.moved_from
            and not other.quarantined
            and other.cooling_until <= now
            for other in self.ring.keys
        )

    def _succeeded(self, key: AppKey, latency: float) -> None:
        # Only a probe lifts quarantine: a call that was already on its way when the key
        # was quarantined must not bring a revoked key back.
        recovers = self.probe and key.quarantined
        key.record_success(latency, recover=recovers)
        if recovers:
            self._state_changed(key, KeyState.QUARANTINED, None)

    def _failed(
        self,
        key: AppKey,
        failure: APIError | APIConnectionError,
        effect: KeyEffect,
        latency: float,
        *,
        wait: float | None,
        retry: int,
    ) -> None:
        """Count a failure on ``key``; a cooling lasts the retry wait, or a backoff."""
        if effect is KeyEffect.LONG_COOL:
            cool_for = self.policy.quota_cooldown
        else:
            cool_for = wait if wait is not None else self.policy.backoff(retry)
        before = key.state(time.monotonic()) if self.hooks.on_key_state_change else None
        key.record_failure(
            failure,
            effect,
            latency,
            transient=_is_transient(failure, self.policy),
            cool_for=cool_for,
            server_error_cooldown=self.policy.server_error_cooldown,
        )
        if before is not None:
            self._state_changed(key, before, error_name(failure))

    def _state_changed(self, key: AppKey, before: KeyState, reason: str | None) -> None:
        after = key.state(time.monotonic())
        if after is not before and self.hooks.on_key_state_change is not None:
            emit(
                self.hooks.on_key_state_change,
                KeyStateChanged(key.label, key.redacted, before, after, reason),
            )

    def _retrying(
        self, key: AppKey, failure: APIError | APIConnectionError, wait: float, *, moved: bool
    ) -> None:
        self._log(key, failure, "moving to another key" if moved else f"retrying in {wait:.2f}s")
        if self.hooks.on_retry is not None:
            event = RetryScheduled(
                self.request.method,
                self.request.path,
                key.label,
                self.record.attempts,
                error_name(failure),
                wait,
                moved,
            )
            emit(self.hooks.on_retry, event)

    def _log(self, key: AppKey, failure: APIError | APIConnectionError, action: str) -> None:
        log.debug(
            "%s %s on key %s: attempt %d failed with %s; %s",
            self.request.method,
            self.request.path,
            key.label,
            self.record.attempts,
            error_name(failure),
            action,
        )

    def _ended(self, status: int | None, error: Exception | None) -> None:
        """Report the end of the call to the request-end hook."""
        if self.hooks.on_request_end is not None:
            event = RequestEnded(
                self.request.method,
                self.request.path,
                self.record.key,
                status,
                None if error is None else error_name(error),
                self.record.attempts,
                time.monotonic() - self.started,
            )
            emit(self.hooks.on_request_end, event)


def _effect(error: APIError | APIConnectionError, policy: RetryPolicy) -> KeyEffect:
    if isinstance(error, APIError):
        return policy.rule(error).key_effect
    return KeyEffect.NONE


def _is_transient(error: APIError | APIConnectionError, policy: RetryPolicy) -> bool:
    """Whether the error is the platform's or the network's (retryable), not the caller's."""
    if isinstance(error, APIError):
        return policy.rule(error).retry
    return True
