"""Key health as callers see it: ``KeyState`` and ``KeyStatus`` (plain data)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime

import attrs

from ._budget import BudgetStatus

__all__ = ["KeyState", "KeyStatus"]


class KeyState(enum.StrEnum):
    """Health of one AppKey."""

    HEALTHY = "healthy"
    """In rotation."""
    COOLING = "cooling"
    """Resting until a time (after a rate limit, a used-up quota, or server errors)."""
    QUARANTINED = "quarantined"
    """Out of rotation until ``check_keys()`` finds it working (after a rejection)."""


@attrs.frozen
class KeyStatus:
    """A snapshot of one key's health; it never holds the key itself.

    Attributes:
        label: the key's label (given, positional ``key-N``, or its redacted id).
        redacted: ``…`` plus the key's last 4 characters.
        state: healthy, cooling or quarantined.
        in_flight: requests using the key now (including those queued for it).
        successes: requests that succeeded with the key.
        failures: requests that failed with the key.
        last_error_type: the error type (or exception name) of the last failure.
        cooling_until: when a cooling key becomes usable again (UTC), else None.
        latency_avg: mean seconds per attempt with this key, None before the first.
        resting_models: the models this key rests from, each with the time (UTC) it
            serves them again (after a rate limit, or a model's free quota ran out).
        budgets: each model's rate budget on this key (configured, or adaptive).
    """

    label: str
    redacted: str
    state: KeyState
    in_flight: int
    successes: int
    failures: int
    last_error_type: str | None
    cooling_until: datetime | None
    latency_avg: float | None
    resting_models: Mapping[str, datetime] = attrs.field(factory=dict)
    budgets: Mapping[str, BudgetStatus] = attrs.field(factory=dict)
