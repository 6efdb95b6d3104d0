"""The ``wishub`` command: one module a subcommand, assembled here.

Each subcommand module has ``SUMMARY``, ``add_arguments(parser)`` and
``async run(args, out, err) -> exit code``. The options every command shares (keys,
base URL or ``--host``, ``--json``, ``--demo``) are added here, and so is what keeps a key off the
screen: no long argument is ever echoed whole, in usage errors or on stderr.

Exit codes: 0 all went well; 1 the API (or the network) failed for at least one call;
2 usage or configuration error; 130 interrupted. ``docs/cli.md`` documents the rest.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn, TextIO, cast

import anyio

from .._hosts import HOSTS
from .._keys import redact
from ..exceptions import ConfigurationError
from . import batch, chat, images, models, rerank
from .common import DEMO_KEY, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED, EXIT_USAGE
from .models import PROGRESS_MIN_KEYS

__all__ = ["DEMO_KEY", "PROGRESS_MIN_KEYS", "main", "redact_arguments"]

COMMANDS: dict[str, ModuleType] = {
    "models": models,
    "chat": chat,
    "rerank": rerank,
    "images": images,
    "batch": batch,
}
"""Each subcommand's module, in the order ``--help`` lists them."""

_EXAMPLES = """\
examples:
  wishub models --demo                        the built-in fake's models (no key needed)
  wishub models --demo --app-key WRONGKEY     how a rejected key is reported
  WISHUB_APP_KEY=... wishub models            the models your AppKey may call
  wishub models --app-key K1 --app-key K2     a table: one row per key, then a summary
  wishub models --keys-file keys.txt          the keys of a file (KEY or LABEL=KEY lines)
  wishub models --keys-file - --long          keys from stdin; each key's model ids
  wishub models --keys-file keys.txt --json   machine-readable, one entry per key
  wishub chat "Hello" --demo --stream         stream an answer from the built-in fake
  wishub chat "Hello" --model ID --stream     print the answer's tokens as they arrive
  wishub chat "What is this?" --image cat.png --model ID      ask a vision model
  wishub rerank "pandas" "bamboo" "pandas eat bamboo" --demo  rank documents
  wishub images "a red panda" --demo          generate an image, saved as image.png
  wishub models --host x6                     the live x6 host (x1 is the default)
  wishub batch in.jsonl -o out.jsonl          a file of requests over every key, resumable

keys file: one key per line, or LABEL=KEY; blank lines and # comments are skipped.

exit codes:
  0    every call succeeded
  1    the API or the network failed for at least one call
  2    usage or configuration error (bad option, no key, unreadable keys file)
  130  interrupted
  141  stdout closed early (piped into head, say)
"""

_SHOWN_ARGUMENT = 8
"""Argument values this long or longer are redacted in error messages."""


def redact_arguments(message: str, argv: Sequence[str]) -> str:
    """``message`` with every long argument value (``KEY`` or ``--opt=KEY``) redacted.

    Any of them could be a key typed in the wrong place, so none is echoed whole.
    """
    values = {word.partition("=")[2] if word.startswith("-") else word for word in argv}
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= _SHOWN_ARGUMENT:
            message = message.replace(value, redact(value))
    return message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error never echoes what could be a key.

    ``wishub models 0123…cdef`` (a key without ``--app-key``) or ``wishub
    --app-key=0123…cdef models`` (an option where it does not belong) would otherwise
    print the key back in "unrecognized arguments: …".
    """

    def __init__(self, *args: Any, argv: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.argv = argv

    def error(self, message: str) -> NoReturn:
        super().error(redact_arguments(message, self.argv))


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--app-key",
        action="append",
        default=[],
        metavar="KEY",
        help="an AppKey (repeat for several); default: $WISHUB_APP_KEY",
    )
    common.add_argument("--base-url", help="API root; default: $WISHUB_BASE_URL or wishub-x1")
    common.add_argument(
        "--host",
        choices=list(HOSTS),
        help="a named host instead of --base-url: x1 (the default), x6, gateway, coding",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--demo", action="store_true", help="run against the built-in fake (no key, no network)"
    )
    common.add_argument(
        "--keys-file",
        metavar="PATH",
        help="read AppKeys from a file: KEY or LABEL=KEY per line, # comments; - for stdin",
    )
    limits = common.add_argument_group("rate budgets (per key and model)")
    limits.add_argument(
        "--rpm", type=_whole, metavar="N", help="at most N requests a minute (default: adapt)"
    )
    limits.add_argument(
        "--tpm", type=_whole, metavar="N", help="at most N tokens (prompt + answer) a minute"
    )
    limits.add_argument(
        "--budgets", action="store_true", help="at the end, a table of every key's budgets"
    )
    limits.add_argument(
        "--published-limits",
        action="store_true",
        help="the platform's published limits for the models it lists (--rpm/--tpm: the rest)",
    )
    return common


def _whole(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("a whole number of at least 1")
    return number


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        argv=argv,
        prog="wishub",
        description="Command line for the wishub model API.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        summary: str = module.SUMMARY
        command = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=getattr(module, "EXAMPLES", _EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            argv=argv,
        )
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    err = cast("TextIO", _Redacting(sys.stderr, argv))
    try:
        code: int = anyio.run(COMMANDS[args.command].run, args, sys.stdout, err)
    except ConfigurationError as exc:
        print(f"wishub: error: {redact_arguments(str(exc), argv)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (`wishub models --json | head`): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return code


class _Redacting(io.TextIOBase):
    """stderr, with every long command-line argument redacted (it could be a key)."""

    def __init__(self, stream: TextIO, argv: Sequence[str]) -> None:
        self._stream = stream
        self._argv = argv

    def write(self, text: str) -> int:
        self._stream.write(redact_arguments(text, self._argv))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()
