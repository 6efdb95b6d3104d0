"""``RetryPolicy``: how many attempts a call makes, how long it waits, its deadline.

Which errors are retried and what they do to a key is the error table's business
(``_errors``); how keys rest and how often a call moves between them is the key
ring's (``KeyPolicy`` in ``_keys``). The loop that applies all three is in
``_pipeline``.
"""

from __future__ import annotations

import math
import random

import attrs

from .exceptions import ConfigurationError

__all__ = ["RetryPolicy", "non_negative"]


def non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """An attrs validator: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _attempts(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    non_negative(None, attribute, value)
    if value > 1:
        raise ConfigurationError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _deadline(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None:
        non_negative(None, attribute, value)  # type: ignore[arg-type]


@attrs.frozen
class RetryPolicy:
    """How calls are retried. Frozen: change it with ``attrs.evolve``.

    Attributes:
        attempts: attempts in all on the same key, first one included (>= 1).
        initial_wait: the first backoff wait, in seconds; it doubles each retry.
        max_wait: the cap of one backoff wait.
        jitter: fraction of each backoff wait that is random (0 = none, 1 = full).
        max_retry_after: the longest Retry-After (or key cooling) a call waits out;
            longer ones fail the call at once.
        deadline: seconds for the whole call (queueing, waits and attempts), or None.
        retry_timeouts: whether a read timeout is retried.
        retry_connection_errors: whether refused, reset or dropped connections are.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    initial_wait: float = attrs.field(default=0.5, validator=non_negative)
    max_wait: float = attrs.field(default=8.0, validator=non_negative)
    jitter: float = attrs.field(default=1.0, validator=_fraction)
    max_retry_after: float = attrs.field(default=60.0, validator=non_negative)
    deadline: float | None = attrs.field(default=None, validator=_deadline)
    retry_timeouts: bool = True
    retry_connection_errors: bool = True

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based): capped exponential + jitter."""
        base = min(self.max_wait, self.initial_wait * 2.0 ** (retry - 1))
        return base * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto

    def wait_before(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry ``retry``: the server's Retry-After (capped), else backoff."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return self.backoff(retry)
