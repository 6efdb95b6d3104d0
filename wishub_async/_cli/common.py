"""What every ``wishub`` command shares: exit codes, the demo, and the client."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._client import AsyncWishub
from ..exceptions import ConfigurationError, WishubError
from .support import labelled_keys, read_keys_file

__all__ = [
    "DEMO_KEY",
    "DEMO_MODEL",
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_USAGE",
    "client_from",
    "describe_error",
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
        return FakeWishub([DEMO_KEY]).client(app_keys=keys or [DEMO_KEY], **options)
    if not keys:
        env_key = os.environ.get("WISHUB_APP_KEY")
        if not env_key:
            raise ConfigurationError(
                "no AppKey: pass --app-key KEY or --keys-file PATH, set WISHUB_APP_KEY,"
                " or try --demo"
            )
        keys = [env_key]
    return AsyncWishub(app_keys=keys, base_url=args.base_url, **options)


def describe_error(error: Exception) -> str:
    """One readable line for an error: class, type, code, message, key label."""
    prefix = "" if isinstance(error, WishubError) else "unexpected "
    return f"{prefix}{type(error).__name__}: {error}"
