"""The ``wishub`` command: list the models each AppKey may call, or chat with a model.

Exit codes: 0 all went well; 1 the API (or the network) failed for at least one key;
2 usage or configuration error; 130 interrupted. ``docs/cli.md`` documents the rest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO, cast

import anyio

from ._cli_support import Progress, error_summary, labelled_keys, read_keys_file, table
from ._client import AsyncWishub
from ._fanout import Outcome, OutcomeList
from ._keys import KeyStatus, redact
from .exceptions import ConfigurationError, WishubError
from .models import ChatCompletion, ModelList

__all__ = ["main"]

EXIT_OK, EXIT_API_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 0, 1, 2, 130, 141
DEMO_KEY = "0123456789abcdef0123456789abcdef"  # the built-in fake's key; not a real one
DEMO_MODEL = "4bd107bff85941239e27b1509eccfe98"  # the first of the fake's models

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

keys file: one key per line, or LABEL=KEY; blank lines and # comments are skipped.

exit codes:
  0    every key answered
  1    the API or the network failed for at least one key
  2    usage or configuration error (bad option, no key, unreadable keys file)
  130  interrupted
  141  stdout closed early (piped into head, say)
"""
PROGRESS_MIN_KEYS = 10
"""With this many keys or more, a progress bar shows on stderr (if it is a terminal)."""


_COMMANDS = {
    "models": "list the models each AppKey may call",
    "chat": "ask a model one question and print its answer (reasoning goes to stderr)",
}


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


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--app-key",
        action="append",
        default=[],
        metavar="KEY",
        help="an AppKey (repeat for several); default: $WISHUB_APP_KEY",
    )
    common.add_argument("--base-url", help="API root; default: $WISHUB_BASE_URL or wishub-x1")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--demo", action="store_true", help="run against the built-in fake (no key, no network)"
    )
    common.add_argument(
        "--keys-file",
        metavar="PATH",
        help="read AppKeys from a file: KEY or LABEL=KEY per line, # comments; - for stdin",
    )
    parser = _Parser(
        argv=argv,
        prog="wishub",
        description="Command line for the wishub model API.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in _COMMANDS.items():
        command = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=_EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.argv = argv
    models = commands.choices["models"]
    models.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help=f"a progress bar on stderr (default: on a terminal, for {PROGRESS_MIN_KEYS}+ keys)",
    )
    models.add_argument(
        "-l", "--long", action="store_true", help="with several keys: each key's model ids"
    )
    chat = commands.choices["chat"]
    chat.add_argument("prompt", help="the question (the user message)")
    chat.add_argument("--model", help="the model id (with --demo: the fake's first model)")
    chat.add_argument("--system", help="a system message to send first")
    chat.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    chat.add_argument("--max-tokens", type=int, help="the longest answer, in tokens")
    chat.add_argument("--temperature", type=float, help="sampling temperature")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    command = _chat if args.command == "chat" else _models
    err = cast("TextIO", _Redacting(sys.stderr, argv))
    try:
        return anyio.run(command, args, sys.stdout, err)
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


def _client(args: argparse.Namespace) -> AsyncWishub:
    entries: list[tuple[str | None, str]] = [(None, key) for key in args.app_key]
    if args.keys_file:
        entries += read_keys_file(args.keys_file)
    keys = labelled_keys(entries) if entries else None
    if args.demo:
        from .testing import FakeWishub  # noqa: PLC0415 - only the demo needs the fake

        # The fake knows DEMO_KEY only: any other --app-key shows the wrong-key answer.
        return FakeWishub([DEMO_KEY]).client(app_keys=keys or [DEMO_KEY])
    if not keys:
        env_key = os.environ.get("WISHUB_APP_KEY")
        if not env_key:
            raise ConfigurationError(
                "no AppKey: pass --app-key KEY or --keys-file PATH, set WISHUB_APP_KEY,"
                " or try --demo"
            )
        keys = [env_key]
    return AsyncWishub(app_keys=keys, base_url=args.base_url)


async def _models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with _client(args) as wh:
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


async def _chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    model = args.model or (DEMO_MODEL if args.demo else None)
    if not model:
        raise ConfigurationError("chat needs --model ID (see `wishub models`)")
    messages = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    params: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    try:
        async with _client(args) as wh:
            if not args.stream:
                answer = await wh.chat.completions.create(model=model, messages=messages, **params)
                _print_answer(answer, args.json, out, err)
                return EXIT_OK
            stream = await wh.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
            async with stream:
                async for chunk in stream:
                    if not args.json:
                        _write(err, chunk.reasoning)
                        _write(out, chunk.text)
                if args.json:
                    _print_answer(stream.completion, True, out, err)  # noqa: FBT003
                else:
                    out.write("\n")
    except WishubError as exc:
        if not isinstance(exc, ConfigurationError):
            print(f"wishub: {describe_error(exc)}", file=err)
            return EXIT_API_ERROR
        raise
    return EXIT_OK


def _write(stream: TextIO, text: str) -> None:
    if text:
        stream.write(text)
        stream.flush()


def _print_answer(answer: ChatCompletion, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        json.dump(_completion_json(answer), out, ensure_ascii=False, indent=2)
    else:
        if answer.reasoning:
            print(answer.reasoning, file=err)
        out.write(answer.text)
    out.write("\n")


def _completion_json(answer: ChatCompletion) -> dict[str, Any]:
    usage = answer.usage
    return {
        "id": answer.id,
        "model": answer.model,
        "content": answer.text,
        "reasoning_content": answer.choices[0].message.reasoning_content
        if answer.choices
        else None,
        "finish_reason": answer.choices[0].finish_reason if answer.choices else None,
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


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


def describe_error(error: Exception) -> str:
    """One readable line for an error: class, type, code, message, key label."""
    prefix = "" if isinstance(error, WishubError) else "unexpected "
    return f"{prefix}{type(error).__name__}: {error}"


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
