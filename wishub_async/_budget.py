"""Rate budgets per key and model: ``RateLimit``, its window, and adaptive rates.

Each key and model that a call names holds one of two states:

- ``Window``, under a configured ``RateLimit``: at most ``requests`` calls and
  ``tokens`` tokens in any ``per`` seconds. The server counts a call when it
  *arrives*, which may be a while after we reserved it (queueing, connection set-up),
  so a call stays counted from its reservation until ``per`` seconds after its answer
  returned: by then the server can no longer count it in the same window as a call we
  send now. That holds whether the server counts in a sliding window, a fixed window or
  a token bucket (of ``requests`` capacity refilled over ``per``), and costs only the
  calls' latency against the full rate.
- ``AdaptiveRate``, for a model with no configured limit: a token bucket whose rate
  adapts, as TCP does: a slow start (the rate doubles each second of successes), a
  cut on a rate-limit answer (once per round: answers to calls sent before a cut do
  not cut again), a quick recovery to 95 % of the rate that met the limit, then a
  slow probe above it. The rate that met the limit is the rate then or, if lower,
  the rate the key delivered since the last cut: under a window limit, a key that
  sent too fast rests out the window, so its rate overstates the limit while what it
  delivered from cut to cut is the limit itself (a probe that just crossed the
  limit is measured by its rate).

Everything here takes the time as an argument (``now``), so it is tested with a
clock of the tests' own.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from .exceptions import ConfigurationError

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "NO_LIMITS",
    "PUBLISHED_ON",
    "AdaptiveRate",
    "Answer",
    "Budget",
    "BudgetStatus",
    "Limits",
    "RateLimit",
    "Window",
    "estimate_tokens",
    "published_limits",
    "spent_tokens",
]

DEFAULT_COMPLETION_TOKENS = 1024
"""Tokens reserved for an answer whose call sets no ``max_tokens``."""

_FIRST_RATE = 10.0
"""Calls a second an adaptive key and model starts at (its first second's burst too)."""
_BURST_SECONDS = 0.2
"""After its first burst, an adaptive rate saves up at most 0.2 s worth of calls (and
one more): it paces them evenly, which no window style tells from the limit itself."""
_LEAST_RATE = 1.0 / 60.0
"""The slowest an adaptive rate goes: one call a minute."""
_DECREASE = 0.7
"""Multiplicative decrease: a rate-limit answer cuts the rate to 70 % (as CUBIC does)..."""
_FIRST_DECREASE = 0.5
"""... and to 50 % when it ends the slow start, whose last doubling overshot."""
_LEAST_SAMPLE = 5
"""A delivered rate is trusted from this many successes since the last cut..."""
_DEEPEST_CUT = 0.25
"""... and lowers the rate that met the limit to a quarter of the rate at most (a key
that was idle delivered little, and says little about the limit)."""
_RECOVER = 0.95
"""After a cut, the rate comes back quickly to 95 % of the rate that met the limit..."""
_PROBE = 0.0005
"""... then probes above it by 0.05 % a success (a hundred calls to go 5 % higher: few
rejections per call, however slow the rate)..."""
_NEAR = 1.05
"""... up to 5 % above that rate; past it the limit is not near..."""
_FAR_PROBE = 0.01
"""... and the probe quickens to 1 % a success..."""
_MOST_PROBE = 0.01
"""... but never more than 1 % a second (a fast rate never runs away)."""


def _count(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"RateLimit {attribute.name} must be a whole number >= 1 or None")


def _per(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"RateLimit {attribute.name} must be seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"RateLimit {attribute.name} must be above 0, got {value!r}")


@attrs.frozen
class RateLimit:
    """At most ``requests`` calls and ``tokens`` tokens per key and model, per ``per`` s.

    Tokens are the prompt's and the answer's together. A limit left None is not
    counted; ``RateLimit()`` with neither sets no budget at all, and also turns
    adaptation off for the models it covers.

    Attributes:
        requests: calls in any window of ``per`` seconds, or None.
        tokens: tokens (prompt + completion) in any window of ``per`` seconds, or None.
        per: the window, in seconds (the platform publishes limits per minute).
    """

    requests: int | None = attrs.field(default=None, validator=_count)
    tokens: int | None = attrs.field(default=None, validator=_count)
    per: float = attrs.field(default=60.0, validator=_per)
    unlimited: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether it counts nothing (read on every call: kept, not computed)."""

    @unlimited.default
    def _counts_nothing(self) -> bool:
        return self.requests is None and self.tokens is None


@attrs.frozen
class Limits:
    """The ``limits=`` option, read: a ``RateLimit`` per model, ``"*"`` the default."""

    by_model: Mapping[str, RateLimit] = attrs.field(factory=dict)
    default: RateLimit | None = None

    @classmethod
    def of(cls, value: object) -> Limits:
        """``limits=`` as given: None, one ``RateLimit``, or ``{model: RateLimit}``.

        Raises:
            ConfigurationError: anything else.
        """
        if value is None:
            return NO_LIMITS
        if isinstance(value, RateLimit):
            return cls({}, value)
        if isinstance(value, Mapping):
            rows = dict(value)
            for model, limit in rows.items():
                if not isinstance(model, str) or not isinstance(limit, RateLimit):
                    raise ConfigurationError(
                        "limits= maps model ids (or '*') to RateLimit(...) values"
                    )
            default = rows.pop("*", None)
            return cls(rows, default)
        raise ConfigurationError(
            f"limits= takes a RateLimit or a {{model: RateLimit}} mapping,"
            f" not {type(value).__name__}"
        )

    def for_model(self, model: str) -> RateLimit | None:
        """The limit configured for ``model`` (None: adapt)."""
        return self.by_model.get(model, self.default)


NO_LIMITS = Limits()


@attrs.frozen
class BudgetStatus:
    """One key and model's budget, as ``KeyStatus.budgets`` shows it.

    Attributes:
        limit: the configured ``RateLimit``, or None when the rate adapts.
        requests_used: calls counted in the window now (in flight included).
        tokens_used: tokens counted in the window now (reserved or reported).
        requests_free: calls that would fit now (None: not limited).
        tokens_free: tokens that would fit now (None: not limited).
        free_at: when the next call will fit (UTC), None if it fits now.
        adaptive_rate: the adapted rate in calls a second, when it adapts.
        waiting: calls waiting in our queue for this budget.
    """

    limit: RateLimit | None
    requests_used: int
    tokens_used: int
    requests_free: int | None
    tokens_free: int | None
    free_at: datetime | None
    adaptive_rate: float | None
    waiting: int


class Answer(enum.Enum):
    """How a budgeted call ended, for its budget."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    OTHER = "other"


# The answers AdaptiveRate.finish tells apart, read once: on Python 3.11 reading an
# enum's member runs Python code, and every call ends in finish.
_OK, _RATE_LIMITED = Answer.OK, Answer.RATE_LIMITED


@attrs.define(eq=False)
class Window:
    """One key and model under a configured ``RateLimit`` (see the module's docstring)."""

    limit: RateLimit
    adaptive: ClassVar[bool] = False
    done: deque[tuple[float, int]] = attrs.Factory(deque)  # (counted until, tokens)
    done_tokens: int = 0
    flying: int = 0
    flying_tokens: int = 0
    waiting: int = 0

    def _expire(self, now: float) -> None:
        done = self.done
        while done and done[0][0] <= now:
            self.done_tokens -= done.popleft()[1]

    def free_at(self, now: float, tokens: int = 0) -> float:
        """When a call of ``tokens`` fits, after the calls already waiting (now if now)."""
        done = self.done
        if done and done[0][0] <= now:
            self._expire(now)
        limit = self.limit
        later = now
        if limit.requests is not None:
            over = len(done) + self.flying + self.waiting + 1 - limit.requests
            if over > 0:
                later = max(later, done[over - 1][0] if over <= len(done) else now + limit.per)
        if limit.tokens is not None and tokens:
            over_tokens = self.done_tokens + self.flying_tokens + tokens - limit.tokens
            if over_tokens > 0:
                later = max(later, self._tokens_free_at(now, over_tokens))
        return later

    def _tokens_free_at(self, now: float, over: int) -> float:
        """When the calls counted first have given back ``over`` tokens."""
        freed, later = 0, now
        for ends, spent in self.done:
            if freed >= over:
                return later
            freed += spent
            later = max(later, ends)
        return later if freed >= over else max(later, now + self.limit.per)

    def fits(self, now: float, tokens: int) -> bool:
        """Whether a call of ``tokens`` fits now (the calls waiting come first)."""
        self._expire(now)
        limit = self.limit
        if limit.requests is not None and len(self.done) + self.flying >= limit.requests:
            return False
        return limit.tokens is None or (
            self.done_tokens + self.flying_tokens + tokens <= limit.tokens
        )

    def take(self, now: float, tokens: int) -> None:
        """Count a call about to be sent."""
        del now
        self.flying += 1
        self.flying_tokens += tokens

    def finish(
        self, now: float, reserved: int, spent: int | None, answer: Answer, reserved_at: float
    ) -> None:
        """A call's answer returned: counted until ``per`` from now, with its real tokens."""
        del answer, reserved_at
        self.flying -= 1
        self.flying_tokens -= reserved
        tokens = reserved if spent is None else spent
        self.done.append((now + self.limit.per, tokens))
        self.done_tokens += tokens

    def cancel(self, reserved: int) -> None:
        """A call never sent: nothing counts."""
        self.flying -= 1
        self.flying_tokens -= reserved

    def status(self, now: float, wall: float) -> BudgetStatus:
        """A snapshot for ``key_status()``; ``wall`` is ``time.time()`` at ``now``."""
        self._expire(now)
        limit = self.limit
        requests = len(self.done) + self.flying
        tokens = self.done_tokens + self.flying_tokens
        next_free = self.free_at(now)
        return BudgetStatus(
            limit=limit,
            requests_used=requests,
            tokens_used=tokens,
            requests_free=None if limit.requests is None else max(limit.requests - requests, 0),
            tokens_free=None if limit.tokens is None else max(limit.tokens - tokens, 0),
            free_at=None if next_free <= now else _utc(wall + next_free - now),
            adaptive_rate=None,
            waiting=self.waiting,
        )


@attrs.define(eq=False)
class AdaptiveRate:
    """One key and model with no configured limit: a token bucket whose rate adapts."""

    adaptive: ClassVar[bool] = True
    rate: float = _FIRST_RATE
    peak: float = math.inf  # the rate at the last rate-limit answer (inf: none yet)
    level: float = _FIRST_RATE  # tokens in the bucket (one a call)
    stamp: float = -math.inf  # when ``level`` was last brought up to date
    cut: float = -math.inf  # when the rate was last cut
    cuttable: bool = True  # a success came since the last cut
    since: float = -math.inf  # when ``successes`` began to count: first use, then each cut
    successes: int = 0  # since ``since``
    probing: bool = False  # the rate reached 95 % of the peak since the cut
    flying: int = 0
    waiting: int = 0

    def _refill(self, now: float) -> None:
        if self.stamp == -math.inf:
            self.stamp = self.since = now
            return
        ceiling = max(self.level, self.rate * _BURST_SECONDS + 1.0)
        self.level = min(self.level + (now - self.stamp) * self.rate, ceiling)
        self.stamp = now

    def free_at(self, now: float, tokens: int = 0) -> float:
        """When the next call fits, after the calls already waiting."""
        del tokens
        self._refill(now)
        missing = self.waiting + 1 - self.level
        return now if missing <= 0 else now + missing / self.rate

    def fits(self, now: float, tokens: int) -> bool:
        """Whether a call fits now (the calls waiting come first)."""
        del tokens
        self._refill(now)
        return self.level >= 1

    def take(self, now: float, tokens: int) -> None:
        """Count a call about to be sent."""
        del tokens
        self._refill(now)
        self.level -= 1
        self.flying += 1

    def finish(
        self, now: float, reserved: int, spent: int | None, answer: Answer, reserved_at: float
    ) -> None:
        """A call's answer returned: a success raises the rate, a rate limit cuts it.

        Before the first rate limit, each success adds a call a second (the rate
        doubles each second: a slow start). A rate-limit answer remembers the rate
        that met the limit as the peak: the rate now or, unless it was probing, the
        rate the key delivered since the last cut if lower (from ``_LEAST_SAMPLE``
        successes on, and down to ``_DEEPEST_CUT`` of the rate). It cuts the rate
        to 70 % of the peak (50 % the first time); from there successes bring it back
        quickly to 95 % of the peak (half the gap each second, never past it), then
        probe above it: slowly near it (``_PROBE`` a success), faster past ``_NEAR``
        times it (``_FAR_PROBE`` a success), and by ``_MOST_PROBE`` a second at
        most. A rate-limit answer cuts again only after a success, and never for a
        call sent before the last cut: that call went out at a rate already cut, and
        a window that is still full says nothing new.
        """
        del reserved, spent
        self.flying -= 1
        if answer is _OK:
            self.cuttable = True
            self.successes += 1
            self.rate += self._step()
        elif answer is _RATE_LIMITED and self.cuttable and reserved_at >= self.cut:
            # Probing, the rate crossed the limit just now: it is the best measure. Else
            # the key sent faster than the limit and rested (out a window): what it
            # delivered since the last cut is what met the limit, if it says enough.
            elapsed = now - self.since
            delivered = (
                self.successes / elapsed
                if not self.probing and self.successes >= _LEAST_SAMPLE and elapsed > 0
                else math.inf
            )
            decrease = _FIRST_DECREASE if self.cut == -math.inf else _DECREASE
            self.peak = min(self.rate, max(delivered, self.rate * _DEEPEST_CUT))
            self.rate = max(self.peak * decrease, _LEAST_RATE)
            self.cut = self.since = now
            self.cuttable, self.successes, self.probing = False, 0, False
            self._refill(now)
            self.level = min(self.level, 0.0)

    def _step(self) -> float:
        """How much one success raises the rate (calls a second)."""
        if self.peak == math.inf:
            return 1.0  # slow start: a second of successes doubles the rate
        target = _RECOVER * self.peak
        gap = target - self.rate
        if gap > 0:
            # Half the gap a second of successes, but at least a probe's step, so that
            # it reaches the target (halving alone never does); and never past it (at a
            # call or two a second, one success is more than a second's worth).
            return min(max(gap / (2 * self.rate), _PROBE * self.rate), gap)
        self.probing = True
        step = _PROBE if self.rate < _NEAR * self.peak else _FAR_PROBE
        return min(step * self.rate, _MOST_PROBE)  # a second's successes: at most 1 %

    def cancel(self, reserved: int) -> None:
        """A call never sent: its token goes back."""
        del reserved
        self.flying -= 1
        self.level += 1

    def status(self, now: float, wall: float) -> BudgetStatus:
        """A snapshot for ``key_status()``; ``wall`` is ``time.time()`` at ``now``."""
        next_free = self.free_at(now)
        return BudgetStatus(
            limit=None,
            requests_used=self.flying,
            tokens_used=0,
            requests_free=None,
            tokens_free=None,
            free_at=None if next_free <= now else _utc(wall + next_free - now),
            adaptive_rate=self.rate,
            waiting=self.waiting,
        )


Budget = Window | AdaptiveRate
"""The budget state of one key and model."""


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def estimate_tokens(body: Any, content: bytes | None) -> int:
    """Tokens to reserve for a call: prompt and answer, never fewer.

    The prompt is counted a token a character of the body as sent (``content``, the
    JSON of ``body``): every string in it, and the few names and marks around them.
    A Chinese character is about one token, and no tokenizer makes many fewer tokens
    than characters: the estimate is meant to count too many, not too few. (Counting
    the JSON's characters, one pass in C, costs a fraction of a walk over the body's
    strings, and adds a few dozen characters a message.) The answer is
    ``max_tokens`` when the body sets it, else ``DEFAULT_COMPLETION_TOKENS`` for a
    chat call (one with ``messages``), else none.
    """
    prompt = 0 if content is None else len(content.decode())
    if type(body) is not dict:
        return prompt
    answer = body.get("max_tokens")
    if answer is None:
        answer = body.get("max_completion_tokens")
    if type(answer) is int and answer >= 0:
        return prompt + answer
    return prompt + (DEFAULT_COMPLETION_TOKENS if "messages" in body else 0)


PUBLISHED_ON = "2026-05-29"
"""The date of the console snapshot ``published_limits()`` reproduces."""

_PUBLISHED: dict[str, tuple[int, int]] = {
    "DeepSeek-V4-Pro": (50, 125_000),
    "DeepSeek-V4-Flash": (250, 600_000),
    "GLM-5.1": (1_000, 500_000),
    "Minimax-M2.5": (30, 50_000),
    "Kimi-K2.5": (30, 50_000),
    "GLM4.6V": (20, 10_000),
    "DeepSeek-V3.1": (30_000, 5_000_000),
    "DeepSeek-R1": (15_000, 1_200_000),
    "BGE-m3": (1_800, 500_000),
    "BGE-Reranker-V2-m3": (1_800, 500_000),
}


def published_limits() -> dict[str, RateLimit]:
    """The limits the platform published per model and AppKey (console, 2026-05-29).

    Opt-in and never applied silently: pass them (or your own changes of them) as
    ``limits=``. Models are the x6 host's names; a model not listed adapts.

        limits = {**published_limits(), "GLM-5.1": RateLimit(requests=500)}
        AsyncWishub(app_keys=keys, limits=limits)
    """
    return {
        model: RateLimit(requests=requests, tokens=tokens, per=60.0)
        for model, (requests, tokens) in _PUBLISHED.items()
    }


_TOTAL_TOKENS = b'"total_tokens"'


def spent_tokens(content: bytes) -> int | None:
    """``usage.total_tokens`` of a JSON answer, found without decoding all of it."""
    at = content.rfind(_TOTAL_TOKENS)
    if at < 0:
        return None
    at += len(_TOTAL_TOKENS)
    # ':' and spaces before the number; then '}' (maybe more), or ',' and the rest
    number = content[at : at + 24].split(b",", 1)[0].strip(b" \t\r\n:}")
    return int(number) if number.isdigit() else None
