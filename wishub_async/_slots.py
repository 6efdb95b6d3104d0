"""What one attempt holds while it runs: concurrency slots, and its share of a budget."""

from __future__ import annotations

import anyio
import attrs

from ._budget import Answer, Budget
from ._errors import KeyEffect
from ._keys import AppKey
from ._state import State
from .exceptions import APIError, ClientStateError

__all__ = ["Slot"]

_OK = Answer.OK  # read once: on Python 3.11 reading an enum's member runs Python code


@attrs.define(eq=False)
class Slot:
    """What one attempt holds: its key's token and a global one, and its budget share.

    The share (``hold``) is settled exactly once, by ``succeed`` or ``fail``.

    Attributes:
        state: the state that settles the share; None before and once settled.
        model: the model whose budget it was taken from.
        budget: the key's local budget for the model (the mirror, for a shared state).
        tokens: the tokens reserved.
        reserved_at: when the share was taken (``_clock.now()``).
        shared: a shared state's own handle on the reservation, if any.
        sent: whether the attempt may have reached the server.
    """

    key: AppKey
    limiter: anyio.CapacityLimiter
    holds_key: bool = False
    holds_global: bool = False
    counted: bool = False
    state: State | None = None
    model: str = ""
    budget: Budget | None = None
    tokens: int = 0
    reserved_at: float = 0.0
    shared: object = None
    sent: bool = False

    def take_now(self) -> bool:
        """Take both tokens if both are free now (no trip through the event loop)."""
        key = self.key
        key.in_flight += 1
        key.assigned += 1
        self.counted = True
        try:
            if key.limiter is not None:
                key.limiter.acquire_on_behalf_of_nowait(self)
                self.holds_key = True
            self.limiter.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            return False
        self.holds_global = True
        return True

    async def take(self) -> None:
        """Take the tokens ``take_now`` could not, waiting in the limiters' queues.

        The key's own token first: a call queued for a busy key must not sit on a
        global slot that another key's call could use.
        """
        key = self.key
        if not self.counted:
            key.in_flight += 1
            key.assigned += 1
            self.counted = True
        if key.limiter is not None and not self.holds_key:
            await _acquire(key.limiter, self)
            self.holds_key = True
        if not self.holds_global:
            await _acquire(self.limiter, self)
            self.holds_global = True

    def hold(
        self, model: str, budget: Budget, tokens: int, at: float, shared: object = None
    ) -> None:
        """Record the budget share a state just took for this attempt."""
        self.model, self.budget, self.tokens, self.reserved_at = model, budget, tokens, at
        self.shared = shared

    def succeed(self, spent: int | None = None) -> None:
        """The attempt succeeded (``spent``: its tokens, if known): free and settle."""
        self.release()
        self._settle(_OK, spent if self.tokens else None)

    def fail(self, failure: BaseException | None) -> None:
        """The attempt failed, or was cancelled, or never sent: free and settle.

        An attempt that never left counts nothing; a rate-limit answer tells an
        adaptive rate to slow down; any other end counts as a call the server saw.
        """
        self.release()
        if self.state is None:
            return
        if not self.sent or isinstance(failure, ClientStateError):
            self._settle(None, None)
        elif isinstance(failure, APIError) and failure.rule is not None:
            limited = failure.rule.key_effect is KeyEffect.COOL
            self._settle(Answer.RATE_LIMITED if limited else Answer.OTHER, None)
        else:
            self._settle(Answer.OTHER, None)

    def _settle(self, answer: Answer | None, spent: int | None) -> None:
        state = self.state
        if state is not None:
            self.state = None  # settled once
            state.settle(self, answer, spent)

    def release(self) -> None:
        """Give the concurrency back; safe to call twice."""
        key = self.key
        if self.counted:
            self.counted = False
            key.in_flight -= 1
        if self.holds_key and key.limiter is not None:
            self.holds_key = False
            key.limiter.release_on_behalf_of(self)
        if self.holds_global:
            self.holds_global = False
            self.limiter.release_on_behalf_of(self)


async def _acquire(limiter: anyio.CapacityLimiter, borrower: object) -> None:
    """Take a token; go through the event loop only when there is none to take.

    ``await limiter.acquire...()`` always yields to the event loop, even with tokens
    to spare: a scheduler round trip per request. The attempt that follows yields
    anyway, so cancellation is still checked promptly.
    """
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except anyio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)
