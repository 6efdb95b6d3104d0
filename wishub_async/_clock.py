"""Time on the request path: one monotonic clock, and waits that tests make instant.

Deadlines, cooling and budgets are all read from ``now()`` (``time.monotonic``);
every wait goes through ``sleep()``. ``wishub_async.testing.instant_waits()`` turns
the switch below on, so retry backoffs, Retry-After and key cooling take no time in
tests while every decision is still made and logged.
"""

from __future__ import annotations

import time

import anyio

__all__ = ["instant_waits_enabled", "now", "set_instant_waits", "sleep"]

now = time.monotonic
"""Seconds on the monotonic clock."""

_instant = False


def set_instant_waits(instant: bool) -> None:
    """Make every retry, cooling and budget wait instant (the tests' switch)."""
    global _instant  # noqa: PLW0603 - one process-wide test switch, like stamina's
    _instant = instant


def instant_waits_enabled() -> bool:
    """Whether the test switch is on."""
    return _instant


async def sleep(seconds: float) -> None:
    """Wait ``seconds`` (no time at all while the test switch is on)."""
    await anyio.sleep(0 if _instant else seconds)
