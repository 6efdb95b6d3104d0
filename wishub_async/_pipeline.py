"""The request path: one call, from the middleware's ``call_next`` to a settled response.

It reads top to bottom, one layer a method, in the manner of httpx's ``send``:

- ``Pipeline.send``: the call as a whole: the client is open, the request is valid,
  the request-end hook hears how it ended;
- ``_send_with_retries``: the deadline, and the loop of attempts: a key chosen per
  attempt, concurrency slots taken, what each failure decides (wait, move to another
  key, or give up), the keys' health updated;
- ``_send_one_attempt``: one HTTP exchange on one key: the wire request, the
  transport, and the one place where a ``Response`` is built whole or an error body
  becomes an ``APIError``.

A streamed response keeps its slots until its body is closed (``_body.StreamBody``);
the key's budget and health and the request-end hook wait for that too. What the
pipeline is made of (``Shared``, ``Settings``, ``Expect``) is in ``_context``; what an
attempt holds (``Slot``) is in ``_slots``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import attrs

from . import _clock
from ._body import StreamBody, close_abandoned, error_body, scrubbed_headers
from ._budget import AdaptiveRate, Budget, RateLimit, Window, estimate_tokens, spent_tokens
from ._context import JSON, CallRecord, Expect, Settings, Shared
from ._errors import ErrorRule, KeyEffect, api_error, error_name, is_error_body
from ._events import BudgetWaited, KeyStateChanged, RequestEnded, RetryScheduled, emit
from ._http import Request, Response
from ._json import dumps, loads
from ._keys import AppKey, StateChange
from ._retry import RetryPolicy
from ._slots import Slot
from ._state import LocalState
from ._wire import WireRequest
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BudgetExceededError,
    ClientClosedError,
    ClientStateError,
    InvalidRequestError,
    WishubError,
)

if TYPE_CHECKING:
    from ._keys import Wait

__all__ = ["Pipeline"]

log = logging.getLogger("wishub_async")


_MIN_RESERVE_WAIT = 0.001
"""The least a call waits when the budget it was chosen for is gone after all."""
_ADAPTIVE_NAP = 0.1
"""The longest one sleep for an adaptive budget lasts before the call looks again."""

_ERROR_MARK = b'"error"'


@attrs.define
class _Tally:
    """One call's running account."""

    request: Request
    started: float
    deadline: float = float("inf")
    attempts: int = 0
    retries: int = 0  # attempts on the same key after a failure
    moves: int = 0  # moves to another key after a rate limit or quota error
    avoid: list[AppKey] = attrs.Factory(list)  # keys this call failed on
    limit: RateLimit | None = None  # the call's rate limit (None: adaptive)
    budgeted: bool = False  # whether the call takes from its key's budget for its model
    tokens: int = 0  # tokens it reserves (when its limit counts tokens)
    label: str | None = None
    error: APIError | APIConnectionError | None = None

    def budget_of(self, key: AppKey) -> Budget:
        """``key``'s budget for the call's model, made on first use (budgeted calls)."""
        model, limit = self.request.model, self.limit
        assert model is not None  # noqa: S101 - only budgeted calls name a model
        budget = key.budgets.get(model)
        if limit is None:
            if not isinstance(budget, AdaptiveRate):
                budget = key.budgets[model] = AdaptiveRate()
        elif not isinstance(budget, Window):
            budget = key.budgets[model] = Window(limit)
        elif budget.limit is not limit:
            budget.limit = limit  # another view's limit for the same key and model
        return budget


class Pipeline:
    """One view's way from a ``Request`` to a settled ``Response``.

    Args:
        shared: the client's pool, keys, limits and lifecycle.
        settings: the view's URL, timeout, retry policy, error table, headers, hooks.
        pinned: the key every call of the view uses (``with_key``), or None.
        probe: ``check_keys``: use the pinned key even while quarantined or resting,
            and lift its quarantine when it answers.
        record: where a tracked view (``fan_out``, ``map``) counts its attempts.
    """

    def __init__(
        self,
        shared: Shared,
        settings: Settings,
        pinned: AppKey | None = None,
        *,
        probe: bool = False,
        record: CallRecord | None = None,
    ) -> None:
        self.shared = shared
        # None: the state is shared (another process may take from the same budgets)
        self.local_state = shared.state if isinstance(shared.state, LocalState) else None
        self.settings = settings
        self.pinned = pinned
        self.probe = probe
        self.record = record

    # -- layer 1: the call -----------------------------------------------------------

    async def send(self, request: Request, expect: Expect = JSON) -> Response:
        """Send a call and return its settled response, or raise its final error."""
        shared = self.shared
        shared.lifecycle.check()
        if shared.abandoned:
            await close_abandoned(shared.abandoned)
        wire = self._wire_parts(request)
        tally = _Tally(request, _clock.now())
        try:
            response = await self._send_with_retries(expect, wire, tally)
        except WishubError as error:
            self._ended(tally, error.status_code if isinstance(error, APIError) else None, error)
            raise
        finally:
            if self.record is not None:
                self.record.attempts += tally.attempts
                self.record.label = tally.label or self.record.label
        if not response.is_stream:
            self._ended(tally, response.status_code, None)
        return response

    def _wire_parts(self, request: Request) -> _WireParts:
        """The URL, headers and body every attempt of the call sends (checked once)."""
        settings = self.settings
        if request.json is None:
            content, headers = None, settings.headers
        else:
            try:
                content = dumps(request.json)
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(f"the request body is not JSON: {exc}") from None
            headers = settings.json_headers
        if request.headers:
            headers = dict(headers)
            for name, value in request.headers.items():
                if not _header_safe(name) or not _header_safe(value, value=True):
                    raise InvalidRequestError(
                        f"header {name!r} is not a string of visible ASCII characters;"
                        " nothing was sent"
                    )
                headers[name.lower()] = value
        base = settings.root_url if request.at_root else settings.base_url
        return _WireParts(base + request.path, headers, content)

    # -- layer 2: attempts, waits, keys ------------------------------------------------

    async def _send_with_retries(self, expect: Expect, wire: _WireParts, tally: _Tally) -> Response:
        """Run attempts until one succeeds, the policy gives up, or a deadline passes.

        Each attempt: a key chosen (free now, or waited for), its concurrency slots
        and budget taken, one exchange; a failure decides whether to move to another
        key, wait and retry, or give up.
        """
        self._plan_budget(tally, wire.content)
        policy = self.settings.retry
        deadline = expect.deadline
        if policy.deadline is not None:
            ends = tally.started + policy.deadline
            deadline = ends if deadline is None else min(deadline, ends)
        if deadline is None:
            return await self._attempts(expect, wire, tally)
        tally.deadline = deadline
        with anyio.move_on_after(deadline - _clock.now()):
            return await self._attempts(expect, wire, tally)
        if expect.deadline == deadline:
            message = "the stream did not start before its stream_timeout"
        else:
            message = f"deadline of {policy.deadline:g}s passed after {tally.attempts} attempt(s)"
        if tally.error is not None:
            message += f"; last error: {tally.error}"
        raise APITimeoutError(message, label=tally.label) from tally.error

    def _plan_budget(self, tally: _Tally, content: bytes | None) -> None:
        """Whether the call takes from a budget, and how many tokens it reserves.

        ``content`` is the body as sent (the default estimate counts its characters).

        Raises:
            BudgetExceededError: the call needs more tokens than a whole window holds.
        """
        model = tally.request.model
        if model is None:
            return
        limit = self.settings.limits.for_model(model)
        if limit is not None and limit.unlimited:
            return
        tally.limit, tally.budgeted = limit, True
        if limit is not None and limit.tokens is not None:
            counter = self.settings.token_counter
            request = tally.request
            tally.tokens = (
                estimate_tokens(request.json, content) if counter is None else counter(request)
            )
            if tally.tokens > limit.tokens:
                raise BudgetExceededError(
                    f"this call reserves {tally.tokens:,} tokens, more than the"
                    f" {limit.tokens:,} tokens per {limit.per:g}s that model {model} allows"
                    " a key: it could never be sent (shorten it, or set max_tokens)"
                )

    async def _attempts(self, expect: Expect, wire: _WireParts, tally: _Tally) -> Response:
        send = self._send_first_chunk if tally.request.stream else self._send_one_attempt
        while True:
            key = self._key_free_now(tally)
            free_now = key is not None  # its budget too, with nothing run since
            if key is None:
                key = await self._choose_key(tally)
            tally.label = key.label
            slot = Slot(key, self.shared.limiter)
            started = _clock.now()
            try:
                if free_now and slot.take_now():
                    wait = self._reserve_now(tally, slot) if tally.budgeted else 0.0
                else:
                    await slot.take()
                    wait = await self._reserve(tally, slot) if tally.budgeted else 0.0
                if wait:  # no room after all (another call, or another process, took it)
                    slot.release()
                    await anyio.sleep(wait)
                    continue
                tally.attempts += 1
                started = _clock.now()
                response = await send(expect, wire, tally, slot)
            except BaseException as exc:  # noqa: BLE001 - re-raised unless an API failure
                wait = self._attempt_failed(exc, slot, _clock.now() - started, tally)
                if wait:
                    await _clock.sleep(wait)
                continue
            if not response.is_stream:
                slot.succeed(spent_tokens(response.content) if slot.tokens else None)
                self._succeeded(key, _clock.now() - started)
            return response

    def _attempt_failed(
        self, exc: BaseException, slot: Slot, latency: float, tally: _Tally
    ) -> float:
        """An attempt failed: free its slot; raise, or say how long to wait (0: move).

        Only an ``APIError`` or an ``APIConnectionError`` may be tried again; anything
        else (a closed client, a cancellation, a bug) ends the call as it is.
        """
        slot.fail(exc)
        if isinstance(exc, ClientStateError) or not isinstance(exc, APIError | APIConnectionError):
            raise exc
        tally.error = exc
        return self._after_failure(exc, slot.key, latency, tally)

    def _reserve_now(self, tally: _Tally, slot: Slot) -> float:
        """``_reserve`` for a key ``_key_free_now`` found with room in its local budget.

        Nothing ran since that check, so the room is still there, in the budget the
        check made or brought up to date: the share is taken without asking again
        (and without a coroutine).
        """
        state, model = self.local_state, tally.request.model
        assert state is not None  # noqa: S101 - _key_free_now: local state only
        assert model is not None  # noqa: S101 - only budgeted calls name a model
        state.take(slot, model, slot.key.budgets[model], tally.tokens)
        slot.state = state
        return 0.0

    async def _reserve(self, tally: _Tally, slot: Slot) -> float:
        """Take the call's share of its key's budget: 0, or the seconds until it fits."""
        model = tally.request.model
        assert model is not None  # noqa: S101 - only budgeted calls name a model
        state = self.shared.state
        wait = await state.reserve(slot, model, tally.budget_of(slot.key), tally.tokens)
        if slot.budget is None:  # nothing taken
            return max(wait, _MIN_RESERVE_WAIT)
        slot.state = state
        return 0.0

    def _after_failure(
        self, failure: APIError | APIConnectionError, key: AppKey, latency: float, tally: _Tally
    ) -> float:
        """What a failed attempt decides, and the key's health updated.

        Returns 0 to move on to another key now, else the seconds to wait before a
        retry; raises the failure when the call gives up.
        """
        policy = self.settings.retry
        rule = self._rule(failure)
        effect = rule.key_effect if rule is not None else KeyEffect.NONE
        retry_after = failure.retry_after if isinstance(failure, APIError) else None
        wait = policy.wait_before(tally.retries + 1, retry_after)
        self._failed(key, failure, effect, latency, wait=wait, model=tally.request.model)
        if self._moves_on(effect, key, tally):
            self._retrying(tally, key, failure, 0.0, moved=True)
            return 0.0
        tally.retries += 1
        if not _retryable(failure, rule, policy) or tally.retries >= policy.attempts:
            raise failure
        if _clock.now() + wait > tally.deadline:
            self._log(tally, key, failure, f"not waiting {wait:.2f}s past the deadline")
            raise failure
        self._retrying(tally, key, failure, wait, moved=False)
        return wait

    def _moves_on(self, effect: KeyEffect, key: AppKey, tally: _Tally) -> bool:
        """Whether a key-scoped failure sends the call to another key at once.

        A key that rejected the call is left for good (each wrong key is met once);
        a rate-limited or quota-less one is left at most ``max_key_moves`` times, and
        only for a key free within ``max_retry_after``.
        """
        if self.pinned is not None or effect is KeyEffect.NONE:
            return False
        rejected = effect is KeyEffect.QUARANTINE
        if not rejected and tally.moves >= self.shared.ring.policy.max_key_moves:
            return False
        tally.moves += not rejected
        tally.avoid.append(key)
        if rejected:
            return True
        soon = _clock.now() + self.settings.retry.max_retry_after
        model = tally.request.model
        return any(
            other is not key and other not in tally.avoid and other.free_at(model) <= soon
            for other in self.shared.ring.keys
        )

    def _key_free_now(self, tally: _Tally) -> AppKey | None:
        """The common case without a trip through the event loop: a key free now."""
        if self.local_state is None:
            return None  # the shared state is refreshed first (``_choose_key``)
        try:
            choice = self._choose(tally)
        except WishubError:
            return None  # _choose_key raises what fits
        return choice if isinstance(choice, AppKey) else None

    def _choose(self, tally: _Tally) -> AppKey | Wait:
        """The key ring's choice for the call's next attempt (see ``KeyRing.choose``)."""
        return self.shared.ring.choose(
            tally.request.model,
            self.pinned,
            tally.avoid,
            probe=self.probe,
            budget=tally.budget_of if tally.budgeted else None,
            tokens=tally.tokens,
        )

    async def _choose_key(self, tally: _Tally) -> AppKey:
        """The key for the next attempt, waiting out a short rest if need be.

        A rest longer than ``max_retry_after``, or past the deadline, is not waited
        out: the call fails at once with the key's last error, marked as not sent.
        When no key can take the call any more, the call's own last error is raised.
        """
        ring, model = self.shared.ring, tally.request.model
        if self.local_state is None:
            await self.shared.state.refresh(ring)
        while True:
            try:
                choice = self._choose(tally)
            except WishubError:
                if tally.error is not None:
                    raise tally.error from None
                raise
            if isinstance(choice, AppKey):
                return choice
            if choice.budget is None:
                await self._wait_for(choice, model, tally.deadline)
                continue
            # Woken, it tries that key's budget at once (unless the key has come to rest
            # meanwhile): counting the calls still asleep as ahead of it would keep
            # every sleeper waiting forever.
            await self._wait_for_budget(choice, choice.budget, tally)
            if choice.key.free_at(model) <= _clock.now():
                return choice.key

    async def _wait_for_budget(self, wait: Wait, budget: Budget, tally: _Tally) -> None:
        """Wait in our queue until ``wait.key``'s budget for the model frees.

        This is real time even in tests (``instant_waits`` skips retry waits only):
        a budget frees with the clock, not with a decision of ours.
        """
        model = tally.request.model or ""
        seconds, label = wait.seconds, wait.key.label
        if _clock.now() + seconds > tally.deadline:
            raise APITimeoutError(
                f"key {label}'s rate budget for model {model} frees in {seconds:.1f}s,"
                " past the call's deadline",
                label=label,
            )
        hook = self.settings.hooks.on_budget_wait
        if hook is not None:
            emit(hook, BudgetWaited(label, model, seconds))
        log.debug("waiting %.2fs for key %s's budget for model %s", seconds, label, model)
        budget.waiting += 1
        try:
            # An adaptive rate may rise while the call sleeps: look again soon.
            await anyio.sleep(min(seconds, _ADAPTIVE_NAP) if budget.adaptive else seconds)
        finally:
            budget.waiting -= 1

    async def _wait_for(self, wait: Wait, model: str | None, deadline: float) -> None:
        key, seconds = wait.key, wait.seconds
        what = "cooling" if key.cooling_until >= wait.until else f"resting from model {model}"
        if seconds > self.settings.retry.max_retry_after:
            raise key.refusal(f"{what} for another {seconds:.0f}s") from None
        if _clock.now() + seconds > deadline:
            raise key.refusal(f"{what} for another {seconds:.1f}s, past the call's deadline")
        log.debug("waiting %.2fs for %s key %s", seconds, what.split(maxsplit=1)[0], key.label)
        await _clock.sleep(seconds)
        self.shared.ring.end_wait(wait, model)

    # -- layer 3: one attempt ------------------------------------------------------------

    async def _send_first_chunk(
        self, expect: Expect, wire: _WireParts, tally: _Tally, slot: Slot
    ) -> Response:
        """A streamed attempt, bounded by ``idle_timeout`` up to its first chunk."""
        timeout = expect.first_chunk_timeout
        if timeout is None:
            return await self._send_one_attempt(expect, wire, tally, slot)
        with anyio.move_on_after(timeout):
            return await self._send_one_attempt(expect, wire, tally, slot)
        raise APITimeoutError(
            f"no stream chunk within {timeout:g}s (idle_timeout)", label=slot.key.label
        )

    async def _send_one_attempt(
        self, expect: Expect, wire: _WireParts, tally: _Tally, slot: Slot
    ) -> Response:
        """One HTTP exchange on the slot's key: the response built whole, or the error."""
        request, key = tally.request, slot.key
        lifecycle = self.shared.lifecycle
        if lifecycle.is_closed():  # aclose() ran while this call waited
            raise ClientClosedError("the client was closed before this call was sent")
        slot.sent = True
        attempt = WireRequest(
            request.method,
            wire.url,
            {**wire.headers, "authorization": key.authorization},
            wire.content,
            self.settings.timeout,
            request.stream,
            key.label,
        )
        reply = await self.shared.transport.send(attempt)
        status = reply.status_code
        headers = scrubbed_headers(reply.headers, key)
        if not 200 <= status < 300:  # noqa: PLR2004 - the 2xx family
            content = reply.content if reply.stream is None else await error_body(reply.stream)
            raise api_error(
                status,
                headers,
                key.scrub(content),
                label=key.label,
                table=self.settings.error_table,
            )
        if reply.stream is None:
            content = key.scrub(reply.content)
            if _ERROR_MARK in content:
                self._raise_for_error_body(status, headers, content, key)
            if lifecycle.is_closed():
                raise ClientClosedError("the client was closed while this call was in flight")
            return Response(status, headers, content, key.label, tally.attempts)
        body = StreamBody(reply.stream, key, self.shared.abandoned)
        response = Response(status, headers, b"", key.label, tally.attempts, body=body)
        if expect.accept is not None:
            try:
                await expect.accept(response)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await body.aclose()
                raise
        body.settle_with(functools.partial(self._stream_ended, slot, tally, _clock.now()))
        return response

    def _stream_ended(
        self,
        slot: Slot,
        tally: _Tally,
        accepted: float,
        error: BaseException | None,
        tokens: int | None,
    ) -> None:
        """A stream's body closed: free its slots, settle its budget, key health, hook.

        A stream that never reported its usage keeps its whole reservation.
        """
        key = slot.key
        if error is None:
            slot.succeed(tokens)
        else:
            slot.fail(error)
        latency = _clock.now() - accepted
        if isinstance(error, APIError | APIConnectionError) and not isinstance(
            error, ClientStateError
        ):
            rule = self._rule(error)
            effect = rule.key_effect if rule is not None else KeyEffect.NONE
            wait = self.settings.retry.wait_before(1)
            self._failed(key, error, effect, latency, wait=wait, model=tally.request.model)
            self._ended(tally, 200, error)
        else:
            self._succeeded(key, latency)
            self._ended(tally, 200, None)

    def _raise_for_error_body(
        self, status: int, headers: Mapping[str, str], content: bytes, key: AppKey
    ) -> None:
        """A 2xx body that holds only ``{"error": ...}`` fails the attempt.

        The platform reports some failures inside a 200 (as it does mid-stream);
        without this they would parse into an empty result.
        """
        try:
            data = loads(content)
        except (ValueError, RecursionError):
            return  # not JSON: the resource's converter says so
        if is_error_body(data):
            raise api_error(
                status, headers, content, label=key.label, table=self.settings.error_table
            )

    # -- decisions and reports -------------------------------------------------------------

    def _rule(self, failure: APIError | APIConnectionError) -> ErrorRule | None:
        if not isinstance(failure, APIError):
            return None
        if failure.rule is not None:
            return failure.rule
        return self.settings.error_table.rule_for(failure.type, failure.status_code)

    def _succeeded(self, key: AppKey, latency: float) -> None:
        change = self.shared.ring.succeeded(key, latency, probe=self.probe)
        if change is not None:
            self.shared.state.report(key, None)
        self._report(change, None)

    def _failed(
        self,
        key: AppKey,
        failure: APIError | APIConnectionError,
        effect: KeyEffect,
        latency: float,
        *,
        wait: float,
        model: str | None,
    ) -> None:
        """Count a failure on ``key``; a cooling lasts the retry wait."""
        rule = self._rule(failure)
        change = self.shared.ring.failed(
            key,
            failure,
            effect,
            latency,
            model=model,
            transient=rule is None or rule.retry,
            cool_for=wait,
        )
        if change is not None or effect is not KeyEffect.NONE:
            self.shared.state.report(key, model)
        self._report(change, error_name(failure))

    def _report(self, change: StateChange | None, reason: str | None) -> None:
        hook = self.settings.hooks.on_key_state_change
        if change is not None and hook is not None:
            key = change.key
            emit(hook, KeyStateChanged(key.label, key.redacted, change.old, change.new, reason))

    def _retrying(
        self,
        tally: _Tally,
        key: AppKey,
        failure: APIError | APIConnectionError,
        wait: float,
        *,
        moved: bool,
    ) -> None:
        self._log(
            tally, key, failure, "moving to another key" if moved else f"retrying in {wait:.2f}s"
        )
        hook = self.settings.hooks.on_retry
        if hook is not None:
            request = tally.request
            event = RetryScheduled(
                request.method,
                request.path,
                key.label,
                tally.attempts,
                error_name(failure),
                wait,
                moved,
            )
            emit(hook, event)

    @staticmethod
    def _log(
        tally: _Tally, key: AppKey, failure: APIError | APIConnectionError, action: str
    ) -> None:
        log.debug(
            "%s %s on key %s: attempt %d failed with %s; %s",
            tally.request.method,
            tally.request.path,
            key.label,
            tally.attempts,
            error_name(failure),
            action,
        )

    def _ended(self, tally: _Tally, status: int | None, error: Exception | None) -> None:
        """Report the end of the call to the request-end hook."""
        hook = self.settings.hooks.on_request_end
        if hook is not None:
            request = tally.request
            event = RequestEnded(
                request.method,
                request.path,
                tally.label,
                status,
                None if error is None else error_name(error),
                tally.attempts,
                _clock.now() - tally.started,
                request.model,
            )
            emit(hook, event)


@attrs.frozen(slots=True)
class _WireParts:
    url: str
    headers: Mapping[str, str]
    content: bytes | None


def _retryable(
    failure: APIError | APIConnectionError, rule: ErrorRule | None, policy: RetryPolicy
) -> bool:
    if isinstance(failure, APIError):
        allowed = rule.retry if rule is not None else False
        return allowed if failure.should_retry is None else failure.should_retry
    if isinstance(failure, APITimeoutError):
        return policy.retry_timeouts
    return policy.retry_connection_errors


def _header_safe(text: object, *, value: bool = False) -> bool:
    """Visible ASCII only (a value may also hold spaces, or be empty)."""
    if not isinstance(text, str):
        return False
    low = 0x20 if value else 0x21
    return (value or bool(text)) and all(low <= ord(char) <= 0x7E for char in text)  # noqa: PLR2004
