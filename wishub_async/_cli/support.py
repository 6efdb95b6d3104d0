"""Helpers of the ``wishub`` command: keys files, the progress line, the key table."""

from __future__ import annotations

import functools
import math
import re
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from ..exceptions import APIError, ConfigurationError

__all__ = ["Progress", "cell", "error_summary", "labelled_keys", "read_keys_file", "table"]

T = TypeVar("T")
ClientT = TypeVar("ClientT")

_TRAILING_COMMENT = re.compile(r"\s+#.*$")
_WHITESPACE = re.compile(r"\s")


def read_keys_file(path: str) -> list[tuple[str | None, str]]:
    """``(label or None, key)`` per line of a keys file (``-`` reads stdin).

    A line holds a key, or ``label=key``; blank lines and ``#`` comments (whole
    lines, or after whitespace) are skipped. Messages name lines, never keys.

    Raises:
        ConfigurationError: the file cannot be read, or a line is malformed.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"cannot read keys file {path}: {reason}") from None
    entries: list[tuple[str | None, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = _TRAILING_COMMENT.sub("", line).strip()  # noqa: PLW2901 - the cleaned line
        if not line or line.startswith("#"):
            continue
        label, equals, key = line.partition("=")
        if not equals:
            label, key = "", line
        label, key = label.strip(), key.strip()
        where = f"keys file {path}, line {number}"
        if not key or (equals and not label):
            raise ConfigurationError(f"{where}: expected KEY or LABEL=KEY")
        if _WHITESPACE.search(key):
            raise ConfigurationError(f"{where}: the key contains whitespace")
        entries.append((label or None, key))
    if not entries:
        raise ConfigurationError(f"keys file {path} holds no key")
    return entries


def labelled_keys(entries: Sequence[tuple[str | None, str]]) -> list[str] | dict[str, str]:
    """The ``app_keys=`` argument: a list when no key has a label, else a dict.

    Keys without a label get the positional label ``key-N`` they would get in a list.

    Raises:
        ConfigurationError: two keys share a label.
    """
    if all(label is None for label, _ in entries):
        return [key for _, key in entries]
    keys: dict[str, str] = {}
    for index, (label, key) in enumerate(entries):
        name = label or f"key-{index}"
        if name in keys:
            raise ConfigurationError(f"the label {name!r} is used by two keys")
        keys[name] = key
    return keys


class Progress:
    """A progress bar on a text stream (stderr).

    On a terminal the line is redrawn in place, at most 10 times a second; on a
    file or pipe (``--progress`` forced it) a new line is written at most once a
    second, so logs stay readable.
    """

    width = 24
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, stream: TextIO, total: int, *, what: str = "keys") -> None:
        self.stream = stream
        self.total = total
        self.what = what
        self.done = 0
        self.failed = 0
        self.tty = stream.isatty()
        self.interval = 0.1 if self.tty else 1.0
        self._drawn = ""
        self._drawn_at = -math.inf

    def wrap(self, fn: Callable[[ClientT], Awaitable[T]]) -> Callable[[ClientT], Awaitable[T]]:
        """``fn``, counting each call as done (and failed, if it raised) when it ends."""

        @functools.wraps(fn)
        async def counted(client: ClientT) -> T:
            try:
                return await fn(client)
            except Exception:
                self.failed += 1
                raise
            finally:
                self.done += 1
                self.draw()

        return counted

    def line(self) -> str:
        """The bar as text, such as ``[######------] 12/24 keys, 1 failed``."""
        filled = self.width * self.done // self.total if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{bar}] {self.done}/{self.total} {self.what}{failed}"

    def draw(self, *, force: bool = False) -> None:
        """Show the current state, unless it was shown a moment ago (or is unchanged)."""
        now, line = self.clock(), self.line()
        if line == self._drawn or not (force or now - self._drawn_at >= self.interval):
            return
        self._drawn, self._drawn_at = line, now
        self.stream.write("\r" + line if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Show the final state; on a terminal, end its line."""
        self.draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def error_summary(error: Exception) -> str:
    """A short cell for a failed key: the class, and the platform type if any."""
    if isinstance(error, APIError) and error.type:
        return f"{type(error).__name__} {error.type}"
    return type(error).__name__


def cell(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    rows = [list(header), *(list(row) for row in rows)]
    widths = [max(cell(row[column]) for row in rows) for column in range(len(header))]
    return [
        "  ".join(
            text + " " * (widths[column] - cell(text)) if column < len(row) - 1 else text
            for column, text in enumerate(row)
        ).rstrip()
        for row in rows
    ]
