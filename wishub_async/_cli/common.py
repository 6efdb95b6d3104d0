"""What every ``wishub`` command shares: exit codes, the demo, and the client."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

from .._budget import RateLimit, published_limits
from .._client import AsyncWishub
from .._status import KeyStatus
from ..exceptions import ConfigurationError, WishubError
from .support import labelled_keys, read_keys_file, table

__all__ = [
    "DEMO_KEY",
    "DEMO_MODEL",
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_USAGE",
    "budget_table",
    "client_from",
    "describe_error",
    "limits_from",
    "opened",
    "report_error",
]

EXIT_OK, EXIT_API_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 0, 1, 2, 130, 141
DEMO_KEY = "0123456789abcdef0123456789abcdef"  # the built-in fake's key; not a real one
DEMO_MODEL = "4bd107bff85941239e27b1509eccfe98"  # the first of the fake's models


def client_from(args: argparse.Namespace, **options: Any) -> AsyncWishub:
    """The client the common options ask for (``--demo``: the built-in fake).

    ``options`` go to ``AsyncWishub`` as they are (a command's own, such as
    ``max_concurrency``).
    """
    entries: list[tuple[str | None, str]] = [(None, key) for key in args.app_key]
    if args.keys_file:
        entries += read_keys_file(args.keys_file)
    keys = labelled_keys(entries) if entries else None
    if args.demo:
        from ..testing import FakeWishub  # noqa: PLC0415 - only the demo needs the fake

        # The fake knows DEMO_KEY only: any other --app-key shows the wrong-key answer.
        return FakeWishub([DEMO_KEY]).client(
            app_keys=keys or [DEMO_KEY], limits=limits_from(args), **options
        )
    if not keys:
        env_key = os.environ.get("WISHUB_APP_KEY")
        if not env_key:
            raise ConfigurationError(
                "no AppKey: pass --app-key KEY or --keys-file PATH, set WISHUB_APP_KEY,"
                " or try --demo"
            )
        keys = [env_key]
    return AsyncWishub(
        app_keys=keys,
        base_url=args.base_url,
        host=args.host,
        limits=limits_from(args),
        **options,
    )


@asynccontextmanager
async def opened(args: argparse.Namespace, err: TextIO) -> AsyncIterator[AsyncWishub]:
    """The client of ``client_from``, open; with ``--budgets``, its budget table after."""
    async with client_from(args) as wh:
        yield wh
    if args.budgets:
        for line in budget_table(wh.key_status()):
            print(line, file=err)


def budget_table(statuses: Sequence[KeyStatus]) -> list[str]:
    """A row per key and model with a budget: what it used, what is free, its rate."""
    rows = []
    for status in statuses:
        for model, budget in status.budgets.items():
            limit = budget.limit
            if limit is None:
                allowed = f"adaptive {budget.adaptive_rate or 0:.1f}/s"
            else:
                parts = [
                    f"{limit.requests} req" if limit.requests else "",
                    f"{limit.tokens} tok" if limit.tokens else "",
                ]
                allowed = " + ".join(part for part in parts if part) + f" per {limit.per:g}s"
            free = "now" if budget.free_at is None else budget.free_at.strftime("%H:%M:%S")
            rows.append(
                [
                    status.label,
                    model,
                    allowed,
                    str(budget.requests_used),
                    str(budget.tokens_used),
                    free,
                    str(budget.waiting),
                ]
            )
    if not rows:
        return ["no rate budgets used (only calls that name a model take from one)"]
    header = ["LABEL", "MODEL", "BUDGET", "REQUESTS", "TOKENS", "FREE", "WAITING"]
    return table(header, rows)


def limits_from(args: argparse.Namespace) -> dict[str, RateLimit] | None:
    """The ``limits=`` that ``--rpm``, ``--tpm`` and ``--published-limits`` ask for."""
    default = (
        RateLimit(requests=args.rpm, tokens=args.tpm, per=60.0) if args.rpm or args.tpm else None
    )
    limits: dict[str, RateLimit] = published_limits() if args.published_limits else {}
    if default is not None:
        limits["*"] = default
    return limits or None


def describe_error(error: Exception) -> str:
    """One readable line for an error: class, type, code, message, key label."""
    prefix = "" if isinstance(error, WishubError) else "unexpected "
    return f"{prefix}{type(error).__name__}: {error}"


def report_error(error: WishubError, err: TextIO) -> int:
    """Describe an API or network failure on ``err``: exit code 1.

    A ``ConfigurationError`` is raised again: ``main`` reports it as a usage error.
    """
    if isinstance(error, ConfigurationError):
        raise error
    print(f"wishub: {describe_error(error)}", file=err)
    return EXIT_API_ERROR
