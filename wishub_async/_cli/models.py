"""``wishub models``: the models each AppKey may call, as text, a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .._client import AsyncWishub
from .._fanout import Outcome, OutcomeList
from .._status import KeyStatus
from ..models import ModelList
from .common import EXIT_API_ERROR, EXIT_OK, describe_error, opened
from .support import Progress, error_summary, table

__all__ = ["PROGRESS_MIN_KEYS", "SUMMARY", "add_arguments", "run"]

SUMMARY = "list the models each AppKey may call"
PROGRESS_MIN_KEYS = 10
"""With this many keys or more, a progress bar shows on stderr (if it is a terminal)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wishub models``."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help=f"a progress bar on stderr (default: on a terminal, for {PROGRESS_MIN_KEYS}+ keys)",
    )
    parser.add_argument(
        "-l", "--long", action="store_true", help="with several keys: each key's model ids"
    )


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """List the models; 1 if any key failed."""
    async with opened(args, err) as wh:
        total = len(wh.key_labels)
        show = args.progress
        if show is None:
            show = total >= PROGRESS_MIN_KEYS and err.isatty()
        progress = Progress(err, total) if show else None
        outcomes = await wh.fan_out(progress.wrap(_list) if progress else _list)
        if progress:
            progress.finish()
        statuses = {status.label: status for status in wh.key_status()}
    if args.json:
        json.dump([_as_json(o, statuses) for o in outcomes], out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif len(outcomes) > 1 and not args.long:
        _print_table(outcomes, statuses, out, err)
    else:
        _print_text(outcomes, statuses, out, err)
    return EXIT_API_ERROR if outcomes.failed else EXIT_OK


async def _list(wh: AsyncWishub) -> ModelList:
    return await wh.models.list()


def _print_text(
    outcomes: OutcomeList[ModelList], statuses: dict[str, KeyStatus], out: TextIO, err: TextIO
) -> None:
    several = len(outcomes) > 1
    for outcome in outcomes:
        label = outcome.label or "?"
        if several:
            print(f"[{label}] {_redacted(statuses, label)}".rstrip(), file=out)
        if outcome.value is not None:
            for model in outcome.value:
                print(f"  {model.id}" if several else model.id, file=out)
        elif outcome.error is not None:
            print(f"wishub: {describe_error(outcome.error)}", file=err)
    if several:
        _print_summary(outcomes, out)


def _print_table(
    outcomes: OutcomeList[ModelList], statuses: dict[str, KeyStatus], out: TextIO, err: TextIO
) -> None:
    """One row per key: label, redacted key, state, model count, error; then a summary."""
    rows, errors = [], []
    for outcome in outcomes:
        label = outcome.label or "?"
        status = statuses.get(label)
        state = status.state if status else "?"
        if outcome.error is not None:
            errors.append(outcome.error)
            rows.append(
                [label, _redacted(statuses, label), state, "-", error_summary(outcome.error)]
            )
        else:
            count = str(len(outcome.value)) if outcome.value is not None else "-"
            rows.append([label, _redacted(statuses, label), state, count, ""])
    for line in table(["LABEL", "KEY", "STATE", "MODELS", "ERROR"], rows):
        print(line, file=out)
    for error in errors:
        print(f"wishub: {describe_error(error)}", file=err)
    _print_summary(outcomes, out)


def _print_summary(outcomes: OutcomeList[ModelList], out: TextIO) -> None:
    failed = len(outcomes.failed)
    print(f"{len(outcomes) - failed} ok, {failed} failed", file=out)


def _redacted(statuses: dict[str, KeyStatus], label: str) -> str:
    status = statuses.get(label)
    return status.redacted if status else ""


def _as_json(outcome: Outcome[ModelList], statuses: dict[str, KeyStatus]) -> dict[str, Any]:
    label = outcome.label or "?"
    status = statuses.get(label)
    entry: dict[str, Any] = {
        "label": label,
        "key": status.redacted if status else None,
        "state": str(status.state) if status else None,
        "ok": outcome.ok,
    }
    if outcome.value is not None:
        entry["models"] = [
            {
                "id": model.id,
                "owned_by": model.owned_by,
                "created": model.created.isoformat() if model.created else None,
            }
            for model in outcome.value
        ]
    elif outcome.error is not None:
        entry["error"] = {
            "class": type(outcome.error).__name__,
            "type": getattr(outcome.error, "type", None),
            "code": getattr(outcome.error, "code", None),
            "message": str(outcome.error),
        }
    return entry
