"""Observability hooks: attrs events for request ends, retries and key state changes.

Hooks are plain callables. They cost nothing when unset (one ``is None`` check), never
see a key (only its label and redacted id), and a hook that raises is logged and
ignored: a broken metrics exporter must not fail the request it observes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._status import KeyState

__all__ = ["BudgetWaited", "Hooks", "KeyStateChanged", "RequestEnded", "RetryScheduled", "emit"]

log = logging.getLogger("wishub_async")

E = TypeVar("E")


@attrs.frozen
class RequestEnded:
    """One call finished (after its retries), successfully or not.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL.
        label: the label of the last key used (None if no key could be used).
        status_code: the final HTTP status, None when no response arrived.
        error: the error type (or exception class name), None on success.
        attempts: HTTP attempts made.
        elapsed: seconds from the call to its end, waits included.
        model: the model the call named, if any.
    """

    method: str
    path: str
    label: str | None
    status_code: int | None
    error: str | None
    attempts: int
    elapsed: float
    model: str | None = None


@attrs.frozen
class RetryScheduled:
    """An attempt failed and the call goes on: on the same key, or moved to another.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL.
        label: the label of the key whose attempt failed.
        attempt: the number of the failed attempt (1-based).
        error: the error type (or exception class name).
        wait: seconds before the next attempt (0 when moving to another key).
        moved: whether the call moves to another key.
    """

    method: str
    path: str
    label: str
    attempt: int
    error: str
    wait: float
    moved: bool


@attrs.frozen
class KeyStateChanged:
    """The SDK changed a key's health (cooling, quarantine, or recovery).

    Attributes:
        label: the key's label.
        redacted: ``…`` plus the key's last 4 characters.
        old: the state before.
        new: the state after.
        reason: the error type that caused it, None for a recovery.
    """

    label: str
    redacted: str
    old: KeyState
    new: KeyState
    reason: str | None


@attrs.frozen
class BudgetWaited:
    """A call waits in our queue for a key's rate budget (before it is sent).

    Attributes:
        label: the label of the key whose budget it waits for.
        model: the model the call names.
        seconds: how long it waits (it may wait again, if another call took the room).
    """

    label: str
    model: str
    seconds: float


@attrs.frozen
class Hooks:
    """Callables the client calls with events; pass ``hooks=Hooks(...)``.

    Attributes:
        on_request_end: called with a ``RequestEnded`` after every call.
        on_retry: called with a ``RetryScheduled`` before every retry or key move.
        on_key_state_change: called with a ``KeyStateChanged`` when a key's state changes.
        on_budget_wait: called with a ``BudgetWaited`` when a call waits for a budget.
    """

    on_request_end: Callable[[RequestEnded], Any] | None = None
    on_retry: Callable[[RetryScheduled], Any] | None = None
    on_key_state_change: Callable[[KeyStateChanged], Any] | None = None
    on_budget_wait: Callable[[BudgetWaited], Any] | None = None


def emit(hook: Callable[[E], Any], event: E) -> None:
    """Call ``hook`` with ``event``; log and swallow what it raises."""
    try:
        hook(event)
    except Exception:
        log.exception("wishub_async hook %r failed on %r", hook, event)
