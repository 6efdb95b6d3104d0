"""Rate limits the fake enforces per key and model, in three window styles.

``FakeWishub.limit(requests=, tokens=, per=, style=)`` makes the fake answer 429
``rate_limit_exceeded`` (with a Retry-After) once a key and model has used its budget,
the way a real platform would, so code can be tested against limits: the SDK's own
budgets, or a user's. Each limit keeps score: ``rejected`` counts its 429s,
``accepted`` the calls it let through. Tokens are counted from the ``usage`` of whole
(not streamed) answers.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import attrs

__all__ = ["FakeLimit", "LimitStyle"]

LimitStyle = Literal["sliding", "fixed", "bucket"]
"""How the fake counts: a sliding window of ``per`` seconds, fixed windows of ``per``
seconds (reset on the multiple of ``per``), or a token bucket of ``requests`` calls
refilled over ``per`` seconds."""


@attrs.define
class _Counter:
    """One key and model's use under one limit."""

    arrivals: deque[float] = attrs.Factory(deque)
    spent: deque[tuple[float, int]] = attrs.Factory(deque)
    window: int = -1
    window_requests: int = 0
    window_tokens: int = 0
    level: float = math.nan
    token_level: float = math.nan
    stamp: float = 0.0


@attrs.define
class FakeLimit:
    """Per key and model: ``requests`` calls and ``tokens`` tokens per ``per`` seconds.

    Attributes:
        requests: calls allowed per window (None: not counted).
        tokens: tokens (the answers' ``usage.total_tokens``) per window (None: not
            counted); a call is refused while the window's tokens are used up.
        per: the window, in seconds.
        style: ``"sliding"``, ``"fixed"`` or ``"bucket"`` (see ``LimitStyle``).
        model: the model it applies to (None: every model).
        rejected: the 429s it answered.
        accepted: the calls it let through.
    """

    requests: int | None = None
    tokens: int | None = None
    per: float = 60.0
    style: LimitStyle = "sliding"
    model: str | None = None
    rejected: int = 0
    accepted: int = 0
    _counters: dict[tuple[str, str], _Counter] = attrs.field(factory=dict, repr=False)

    def admit(self, key: str, model: str, now: float) -> float | None:
        """Count a call arriving now; None if it may pass, else seconds to wait."""
        if self.model is not None and model != self.model:
            return None
        counter = self._counters.setdefault((key, model), _Counter())
        wait = {"sliding": self._sliding, "fixed": self._fixed, "bucket": self._bucket}[self.style](
            counter, now
        )
        if wait is None:
            self.accepted += 1
        else:
            self.rejected += 1
        return wait

    def spend(self, key: str, model: str, tokens: int, now: float) -> None:
        """Count the tokens an answer used."""
        if self.model is not None and model != self.model:
            return
        counter = self._counters.setdefault((key, model), _Counter())
        counter.spent.append((now, tokens))
        counter.window_tokens += tokens
        if not math.isnan(counter.token_level):
            counter.token_level -= tokens

    def _sliding(self, counter: _Counter, now: float) -> float | None:
        arrivals, spent = counter.arrivals, counter.spent
        while arrivals and arrivals[0] <= now - self.per:
            arrivals.popleft()
        while spent and spent[0][0] <= now - self.per:
            spent.popleft()
        if self.requests is not None and len(arrivals) >= self.requests:
            return arrivals[0] + self.per - now
        if self.tokens is not None and sum(tokens for _, tokens in spent) >= self.tokens:
            return spent[0][0] + self.per - now
        arrivals.append(now)
        return None

    def _fixed(self, counter: _Counter, now: float) -> float | None:
        window = math.floor(now / self.per)
        if window != counter.window:
            counter.window, counter.window_requests, counter.window_tokens = window, 0, 0
        full = (self.requests is not None and counter.window_requests >= self.requests) or (
            self.tokens is not None and counter.window_tokens >= self.tokens
        )
        if full:
            return (window + 1) * self.per - now
        counter.window_requests += 1
        return None

    def _bucket(self, counter: _Counter, now: float) -> float | None:
        if math.isnan(counter.level):
            counter.level = float(self.requests or 0)
            counter.token_level = float(self.tokens or 0)
            counter.stamp = now
        elapsed, counter.stamp = now - counter.stamp, now
        if self.requests is not None:
            rate = self.requests / self.per
            counter.level = min(self.requests, counter.level + elapsed * rate)
            if counter.level < 1:
                return (1 - counter.level) / rate
        if self.tokens is not None:
            rate = self.tokens / self.per
            counter.token_level = min(self.tokens, counter.token_level + elapsed * rate)
            if counter.token_level <= 0:
                return -counter.token_level / rate + 1 / rate
        counter.level -= 1
        return None
