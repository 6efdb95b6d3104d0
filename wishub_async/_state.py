"""Where a client keeps what outlives one call: rate budgets and key health.

``LocalState``, the default, keeps both in this process (the budgets in the keys'
``Budget`` objects, the health in the ``AppKey`` objects). A shared state (such as
``wishub_async.redis.RedisState``) implements the same ``State`` protocol to share
them between processes; it keeps the local objects up to date as a mirror, which is
also what it falls back on when the shared store is out of reach.

The request path calls the state at three moments: ``reserve`` before an attempt is
sent (the share taken is recorded on the attempt's ``Slot``), ``settle`` once its
answer (or failure) is known, and ``report`` and ``refresh`` around key health.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from . import _clock
from ._budget import Answer, Budget

if TYPE_CHECKING:
    from ._keys import AppKey, KeyRing
    from ._slots import Slot

__all__ = ["LocalState", "State"]


class State(Protocol):
    """What a client asks of the place where budgets and key health live."""

    async def reserve(self, slot: Slot, model: str, budget: Budget, tokens: int) -> float:
        """Take an attempt's share of its key's (``slot.key``) budget for ``model``.

        Returns 0 with the share recorded on the slot (``Slot.hold``), or the seconds
        to wait before it may fit, with nothing recorded (the call then waits and
        chooses a key again).
        """
        ...

    def settle(self, slot: Slot, answer: Answer | None, spent: int | None) -> None:
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

    async def reserve(self, slot: Slot, model: str, budget: Budget, tokens: int) -> float:
        """Take the share from the local budget, or say how long until it fits."""
        now = _clock.now()
        if not budget.fits(now, tokens):
            return max(budget.free_at(now, tokens) - now, 0.0)
        self.take(slot, model, budget, tokens, now)
        return 0.0

    def take(
        self, slot: Slot, model: str, budget: Budget, tokens: int, now: float | None = None
    ) -> None:
        """Take the share, known to fit (``reserve``, or a key just found free now)."""
        now = _clock.now() if now is None else now
        budget.take(now, tokens)
        slot.hold(model, budget, tokens, now)

    def settle(self, slot: Slot, answer: Answer | None, spent: int | None) -> None:
        """Count the attempt in the local budget (or give its share back)."""
        budget = slot.budget
        assert budget is not None  # noqa: S101 - settled only when held
        if answer is None:
            budget.cancel(slot.tokens)
        else:
            budget.finish(_clock.now(), slot.tokens, spent, answer, slot.reserved_at)

    def report(self, key: AppKey, model: str | None) -> None:
        """Nothing to share."""

    async def refresh(self, ring: KeyRing) -> None:
        """Nothing to fetch."""

    async def aclose(self) -> None:
        """Nothing to close."""
