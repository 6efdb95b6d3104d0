"""Where a client keeps what outlives one call: rate budgets and key health.

``LocalState``, the default, keeps both in this process (the budgets in the keys'
``Budget`` objects, the health in the ``AppKey`` objects). A shared state (such as
``wishub_async.redis.RedisState``) implements the same ``State`` protocol to share
them between processes; it keeps the local objects up to date as a mirror, which is
also what it falls back on when the shared store is out of reach.

The request path calls the state at three moments: ``reserve`` before an attempt is
sent, ``settle`` once its answer (or failure) is known, and ``report`` and
``refresh`` around key health.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

from . import _clock
from ._budget import Answer, Budget

if TYPE_CHECKING:
    from ._keys import AppKey, KeyRing

__all__ = ["LocalState", "State", "Ticket"]


@attrs.define(eq=False)
class Ticket:
    """One attempt's share of a key's budget for a model, settled exactly once.

    Attributes:
        key: the key it was taken from.
        model: the model.
        budget: the key's local budget for the model (the mirror, for a shared state).
        tokens: the tokens reserved.
        at: when it was taken (``_clock.now()``).
        shared: a shared state's own handle on the reservation, if any.
        sent: whether the attempt may have reached the server.
        settled: whether ``State.settle`` has run for it.
    """

    key: AppKey
    model: str
    budget: Budget
    tokens: int
    at: float
    shared: object = None
    sent: bool = False
    settled: bool = False


class State(Protocol):
    """What a client asks of the place where budgets and key health live."""

    async def reserve(self, key: AppKey, model: str, budget: Budget, tokens: int) -> Ticket | float:
        """Take a call's share of ``key``'s budget for ``model``.

        Returns the ``Ticket``, or the seconds to wait before it may fit (the call
        then waits and chooses a key again).
        """
        ...

    def settle(self, ticket: Ticket, answer: Answer | None, spent: int | None) -> None:
        """The attempt ended: ``answer`` (None: it was never sent), and its tokens."""
        ...

    def report(self, key: AppKey, model: str | None) -> None:
        """``key``'s health just changed (for ``model``, if the change is about one)."""
        ...

    async def refresh(self, ring: KeyRing) -> None:
        """Bring the keys' health up to date with what others saw (cheap when local)."""
        ...

    async def aclose(self) -> None:
        """Let go of what the state holds open (called by the client's ``aclose``)."""
        ...


class LocalState:
    """Budgets and key health in this process only: the default, needing nothing."""

    def __repr__(self) -> str:
        return "<LocalState>"

    async def reserve(self, key: AppKey, model: str, budget: Budget, tokens: int) -> Ticket | float:
        """Take the share from the local budget, or say how long until it fits."""
        now = _clock.now()
        if not budget.fits(now, tokens):
            return max(budget.free_at(now, tokens) - now, 0.0)
        return self.take(key, model, budget, tokens, now)

    def take(
        self, key: AppKey, model: str, budget: Budget, tokens: int, now: float | None = None
    ) -> Ticket:
        """Take the share, known to fit (``reserve``, or a key just found free now)."""
        now = _clock.now() if now is None else now
        budget.take(now, tokens)
        return Ticket(key, model, budget, tokens, now)

    def settle(self, ticket: Ticket, answer: Answer | None, spent: int | None) -> None:
        """Count the attempt in the local budget (or give its share back)."""
        if answer is None:
            ticket.budget.cancel(ticket.tokens)
        else:
            ticket.budget.finish(_clock.now(), ticket.tokens, spent, answer, ticket.at)

    def report(self, key: AppKey, model: str | None) -> None:
        """Nothing to share."""

    async def refresh(self, ring: KeyRing) -> None:
        """Nothing to fetch."""

    async def aclose(self) -> None:
        """Nothing to close."""
