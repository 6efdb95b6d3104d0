"""``wishub batch``: run a file of requests over every key, resumably and exactly once.

The work is ``wishub_async.batch.run_batch``; this module adds the command line: the
client built from the options (in one place: ``client``), a progress bar, the
summary, and Ctrl-C. The first Ctrl-C cancels the requests in flight, flushes both
files and says how to resume; a second one ends the process at once (every line
written is whole either way, and the next run cuts off a torn one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import anyio
import attrs

from .._client import AsyncWishub
from ..batch import ENDPOINTS, BatchPlan, BatchSummary, check_batch, run_batch
from ..exceptions import BatchFileError, ConfigurationError
from .common import (
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    budget_table,
    client_from,
)
from .support import Progress

__all__ = [
    "DEFAULT_CONCURRENCY",
    "EXAMPLES",
    "SUMMARY",
    "add_arguments",
    "client",
    "default_backend",
    "run",
]

SUMMARY = "run a file of requests (OpenAI Batch lines) over every key; resumable"
DEFAULT_CONCURRENCY = 50
PLAIN_PROGRESS_EVERY = 10.0
"""Seconds between progress lines when stderr is not a terminal (a log file)."""

_URLS = ", ".join(sorted({url for _, url in ENDPOINTS}))
EXAMPLES = f"""\
examples:
  wishub batch requests.jsonl -o results.jsonl --demo       try it on the built-in fake
  wishub batch requests.jsonl -o results.jsonl -e failed.jsonl --keys-file keys.txt
  wishub batch requests.jsonl -o results.jsonl --dry-run    check the file, count what is left
  wishub batch requests.jsonl -o results.jsonl --json       the summary as JSON on stdout

  Run the same command again after Ctrl-C, a crash or a kill: it sends only what is
  not finished, and each custom_id ends up exactly once in the output or errors file.

a requests line (one JSON object a line; urls: {_URLS}):
  {{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
   "body": {{"model": "MODEL", "messages": [{{"role": "user", "content": "你好"}}]}}}}

a results line (in completion order; failures carry "error"):
  {{"id": "batch_req_…", "custom_id": "q1",
   "response": {{"status_code": 200, "request_id": "…", "body": {{…}}}}, "error": null}}

exit codes:
  0    every request answered
  1    some failed for good (see the errors file), or are not finished (run again)
  2    usage or input error: a bad option, no key, a malformed line (nothing sent)
  130  interrupted (Ctrl-C): run the same command again to resume
"""


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError("must be seconds >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wishub batch``."""
    parser.add_argument("input", metavar="INPUT", help="the requests file (OpenAI Batch lines)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the results file (appended to)"
    )
    parser.add_argument(
        "-e", "--errors", metavar="ERR", help="where failures go (default: the output file)"
    )
    parser.add_argument(
        "--concurrency",
        type=_count,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight at once, over all keys (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--backend",
        choices=["httpx", "aiohttp"],
        help="the HTTP transport (default: aiohttp if installed and no proxy is set, else httpx)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check the files, count what is left; send nothing"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress on stderr: a bar on a terminal, else a line every"
        f" {PLAIN_PROGRESS_EVERY:g}s (default: on)",
    )
    parser.add_argument(
        "--fsync-interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="flush results to the disk this often; 0: after every line (default 1)",
    )


def client(args: argparse.Namespace) -> AsyncWishub:
    """The batch's client: the one place its options come from the command line."""
    options: dict[str, object] = {"max_concurrency": args.concurrency}
    if not args.demo:  # the demo's fake mounts on httpx
        options["backend"] = args.backend or default_backend()
    return client_from(args, **options)


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def default_backend() -> str:
    """The transport for a batch: aiohttp (the fast one) unless it is missing or a proxy is set.

    The aiohttp transport does not read proxy settings from the environment; httpx does.
    """
    proxied = any(name.upper() in os.environ or name in os.environ for name in _PROXY_VARIABLES)
    if proxied or importlib.util.find_spec("aiohttp") is None:
        return "httpx"
    return "aiohttp"


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run (or, with ``--dry-run``, check) the batch; the exit code."""
    if args.input == "-":
        raise ConfigurationError("the requests file is read twice: give its path, not -")
    try:
        if args.dry_run:
            plan = await check_batch(args.input, args.output, args.errors)
            _print_plan(plan, args, out)
            return EXIT_OK
        return await _run(args, out, err)
    except BatchFileError as error:
        _print_file_error(error, args, err)
        return EXIT_USAGE
    except OSError as error:  # writing the results failed (a full disk, say)
        print(f"wishub: writing the results failed: {error.strerror or error}.", file=err)
        print(f"wishub: {_RESUME}.", file=err)
        return EXIT_API_ERROR


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    started = time.monotonic()
    bar = _Bar(err) if args.progress else None
    watch = _Watch(err, bar)
    async with client(args) as wh:
        await watch.run(
            lambda: run_batch(
                wh,
                args.input,
                args.output,
                args.errors,
                on_progress=watch.seen,
                fsync_interval=args.fsync_interval,
                concurrency=args.concurrency,
            )
        )
    summary = watch.summary
    if bar is not None and summary is not None:
        bar.finish()
    if summary is not None and watch.interrupted:
        summary = attrs.evolve(summary, elapsed=time.monotonic() - started)
    if summary is not None:
        _print_summary(summary, args, out)
    if args.budgets:
        print("\n".join(budget_table(wh.key_status())), file=err)
    out.flush()
    if watch.interrupted:
        print(f"wishub: interrupted. {_RESUME}.", file=err)
        return EXIT_INTERRUPTED
    if summary is None:  # pragma: no cover - run_batch always reports before it returns
        return EXIT_API_ERROR
    if summary.stopped:
        print(f"wishub: stopped early: {summary.stopped}", file=err)
    elif summary.remaining:
        print(f"wishub: {summary.remaining:,} not finished. {_RESUME}.", file=err)
    clean = summary.complete and not (summary.failed_before + summary.failed)
    return EXIT_OK if clean else EXIT_API_ERROR


_RESUME = "Run the same command again to resume (finished requests are not sent again)"


class _Watch:
    """One ``run_batch`` under Ctrl-C: the first stops it cleanly, a second at once."""

    def __init__(self, err: TextIO, bar: _Bar | None) -> None:
        self.err = err
        self.bar = bar
        self.scope = anyio.CancelScope()
        self.interrupted = False
        self.summary: BatchSummary | None = None
        self.error: Exception | None = None

    def seen(self, summary: BatchSummary) -> None:
        """``on_progress``: keep the latest summary, move the bar."""
        if self.summary is None:
            pending = summary.remaining
            print(f"wishub: {pending:,} of {summary.total:,} requests to send", file=self.err)
        self.summary = summary
        if self.bar is not None:
            self.bar.update(summary)

    async def run(self, job: Callable[[], Awaitable[BatchSummary]]) -> None:
        """Run ``job`` until it ends or is interrupted; raise its error, if any."""
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(self._job, job, group.cancel_scope)
                async for _ in signals:
                    if self.interrupted:
                        self._stop_now()
                    self.interrupted = True
                    self._say("stopping: closing the files (Ctrl-C again to stop at once)")
                    self.scope.cancel()
        if self.error is not None:
            raise self.error

    async def _job(
        self, job: Callable[[], Awaitable[BatchSummary]], group: anyio.CancelScope
    ) -> None:
        with self.scope:
            try:
                self.summary = await job()
            except Exception as exc:  # noqa: BLE001 - raised again by run(), outside the group
                self.error = exc
        group.cancel()

    def _stop_now(self) -> None:
        self._say(f"stopped at once; every line written is whole. {_RESUME}.")
        os._exit(EXIT_INTERRUPTED)

    def _say(self, text: str) -> None:
        if self.bar is not None and self.bar.tty:
            self.err.write("\n")
        self.err.write(f"wishub: {text}\n")
        self.err.flush()


class _Bar(Progress):
    """The batch's progress: finished of all, failures, rate, time left.

    A bar redrawn in place on a terminal; elsewhere a plain line every
    ``PLAIN_PROGRESS_EVERY`` seconds (and at the end).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream, 0, what="requests")
        if not self.tty:
            self.interval = PLAIN_PROGRESS_EVERY
        self.summary = BatchSummary(0)

    def update(self, summary: BatchSummary) -> None:
        """Show where the batch stands (at most as often as the interval allows)."""
        self.summary = summary
        self.total = summary.total
        self.done = summary.total - summary.remaining
        self.failed = summary.failed_before + summary.failed
        self.draw()

    def line(self) -> str:
        """``[####----] 120/500 requests, 2 failed, 41.5/s, 9s left`` (no bar off a tty)."""
        summary = self.summary
        text = super().line() if self.tty else f"progress: {self.done}/{self.total} {self.what}"
        if not self.tty and self.failed:
            text += f", {self.failed} failed"
        if summary.deferred:
            text += f", {summary.deferred} not finished"
        if summary.rate:
            text += f", {summary.rate:.1f}/s, {_duration(summary.remaining / summary.rate)} left"
        return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:  # noqa: PLR2004 - a minute
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:  # noqa: PLR2004 - an hour
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _print_summary(summary: BatchSummary, args: argparse.Namespace, out: TextIO) -> None:
    """The summary on stdout: as JSON with ``--json``, else one labelled line a figure."""
    if args.json:
        json.dump(summary.to_dict(), out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    failed = summary.failed_before + summary.failed
    done = summary.done_before + summary.done
    where = f", in {args.errors or args.output}" if failed else ""
    rows = [
        ("done", f"{summary.done:,} this run; {done:,} of {summary.total:,} in all"),
        ("failed", f"{summary.failed:,} this run; {failed:,} in all{where}"),
        ("not finished", f"{summary.remaining:,}"),
        ("retried", f"{summary.retried:,}"),
        ("tokens in", f"{summary.prompt_tokens:,}"),
        ("tokens out", f"{summary.completion_tokens:,}"),
        ("wall time", f"{summary.elapsed:.1f}s"),
        ("rate", f"{summary.rate:.1f} requests/s"),
    ]
    for label, value in rows:
        print(f"{label + ':':<14}{value}", file=out)


def _print_plan(plan: BatchPlan, args: argparse.Namespace, out: TextIO) -> None:
    """What a run would do (``--dry-run``), as text or JSON."""
    if args.json:
        json.dump({**attrs.asdict(plan), "valid": True}, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    print(f"{args.input}: {plan.total:,} requests, all valid", file=out)
    print(f"{'already done:':<16}{plan.done:,}", file=out)
    print(f"{'already failed:':<16}{plan.failed:,}", file=out)
    print(f"{'to send:':<16}{plan.pending:,}", file=out)
    for name, counts in (("url", plan.urls), ("model", plan.models)):
        for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {name} {key}: {count:,}", file=out)
    if plan.torn:
        print(f"a torn last line ({plan.torn} bytes) will be cut off by the next run", file=out)


def _print_file_error(error: BatchFileError, args: argparse.Namespace, err: TextIO) -> None:
    """Each problem on stderr, the file named by its role.

    stderr redacts every long command-line value (it could be a key typed in the wrong
    place), so a path would show as ``…sonl``: the role reads better.
    """
    roles = {args.errors: "the errors file", args.output: "the output file"}
    name = roles.get(error.path, "the requests file" if error.path == args.input else "a file")
    for line, reason in error.problems:
        print(f"wishub: {name}{'' if line is None else f', line {line}'}: {reason}", file=err)
    if error.count > len(error.problems):
        print(f"wishub: ... and {error.count - len(error.problems):,} more", file=err)
    print("wishub: nothing was sent", file=err)
