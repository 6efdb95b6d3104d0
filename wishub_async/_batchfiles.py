"""The files of a batch: the requests file read as a stream, the results files appended to.

The requests file (OpenAI Batch lines) is read twice and never held: once to check
every line and decide which ones to send, once to send them. What stays in memory
is small and fixed per line: the ``custom_id``s as 64-bit hashes (``IdSet``, about
20 bytes an id) while checking, then the numbers of the lines still to send (4
bytes each).

A results file gets one line per finished request, written with a single
``os.write`` on a descriptor opened with ``O_APPEND``: once ``write`` returns, the
line is in the kernel's page cache and survives the death of the process (SIGKILL
included); ``fsync`` makes it survive a power cut too. A kill in the middle of a
large write can leave a torn last line (no newline): ``ResultsFile.repair`` cuts it
off before anything else is read or written, so it is never kept.
"""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections import Counter
from collections.abc import Container, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .exceptions import BatchFileError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "MAX_PROBLEMS",
    "BatchFiles",
    "BatchLine",
    "IdSet",
    "LineProblem",
    "ResultsFile",
    "ResultsTally",
    "Scan",
    "parse_request",
    "pending_lines",
    "scan_requests",
    "scan_results",
]

MAX_PROBLEMS = 20
"""Problems a ``BatchFileError`` lists at most (checking goes on to count them all)."""

_MASK = (1 << 64) - 1
_FIRST_SLOTS = 1 << 12
_BLOCK = 1 << 16
_OUR_PREFIX = b'{"id":"batch_req_'
_DONE_SUFFIX = b',"error":null}'
_ID_FIELD = '"custom_id":'


class IdSet:
    """A set of ``custom_id``s kept as 64-bit hashes in one flat table (open addressing).

    About 20 bytes an id where a Python ``set`` of the strings takes over 100. The
    hash is Python's own (SipHash, salted per process): the set never leaves the
    process. Two different ids share a hash with a chance of about n²/2⁶⁵ (one in a
    billion for a million ids); the requests check catches such a pair inside one
    input (see ``scan_requests``).
    """

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * _FIRST_SLOTS))
        self._mask = _FIRST_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, custom_id: object) -> bool:
        if not isinstance(custom_id, str):
            return False
        return self._slots[self._slot(_digest(custom_id))] != 0

    def add(self, custom_id: str) -> bool:
        """Add an id; False if it (or an id with the same hash) was there already."""
        return self._insert(_digest(custom_id))

    def _slot(self, digest: int) -> int:
        """Where ``digest`` is, or the empty slot where it would go (linear probing)."""
        slots, mask = self._slots, self._mask
        index = digest & mask
        while (value := slots[index]) != 0 and value != digest:
            index = (index + 1) & mask
        return index

    def _insert(self, digest: int) -> bool:
        index = self._slot(digest)
        if self._slots[index]:
            return False
        self._slots[index] = digest
        self._count += 1
        if 2 * self._count > self._mask:  # at most half full: probes stay short
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = 2 * len(old) - 1
        self._count = 0
        for value in old:
            if value:
                self._insert(value)


def _digest(custom_id: str) -> int:
    return (hash(custom_id) & _MASK) or 1  # 0 marks an empty slot


@attrs.frozen(slots=True)
class BatchLine:
    """One checked request line.

    Attributes:
        number: the line number (1-based).
        custom_id: the caller's id for the request.
        method: the HTTP method, upper case.
        url: the batch URL as written, such as ``/v1/chat/completions``.
        path: where it goes, below the client's base URL.
        body: the JSON body.
        model: the body's ``model``.
    """

    number: int
    custom_id: str
    method: str
    url: str
    path: str
    body: dict[str, Any]
    model: str


class LineProblem(Exception):  # noqa: N818 - internal signal, turned into BatchFileError
    """What is wrong with one line (and its ``custom_id``, when it has a usable one)."""

    def __init__(self, reason: str, custom_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.custom_id = custom_id


def parse_request(number: int, raw: bytes, endpoints: Mapping[tuple[str, str], str]) -> BatchLine:
    """Check one requests-file line and return it; ``LineProblem`` says what is wrong."""
    data = _json_object(raw)
    custom_id = data.get("custom_id")
    if custom_id is None:
        raise LineProblem("no custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineProblem("custom_id must be a non-empty string")
    method, url, body = data.get("method"), data.get("url"), data.get("body")
    if not isinstance(method, str):
        raise LineProblem(_missing("method", method), custom_id)
    if not isinstance(url, str):
        raise LineProblem(_missing("url", url), custom_id)
    path = endpoints.get((method.upper(), url))
    if path is None:
        known = sorted({known_url for _, known_url in endpoints})
        if url not in known:
            raise LineProblem(f"unknown url {url!r} (known: {', '.join(known)})", custom_id)
        allowed = sorted(known_method for known_method, known_url in endpoints if known_url == url)
        raise LineProblem(
            f"method {method!r} is not allowed for {url} (use {allowed[0]})", custom_id
        )
    if not isinstance(body, dict):
        raise LineProblem("body must be a JSON object", custom_id)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineProblem("body.model must name the model (a non-empty string)", custom_id)
    if body.get("stream"):
        raise LineProblem("body.stream is not supported in a batch; remove it", custom_id)
    return BatchLine(number, custom_id, method.upper(), url, path, body, model)


def _missing(name: str, value: object) -> str:
    return f"no {name}" if value is None else f"{name} must be a string"


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise LineProblem("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"column {exc.colno}" if exc.lineno == 1 else "at the end of the line"
        raise LineProblem(f"not valid JSON: {exc.msg} ({where})") from None
    except (ValueError, RecursionError):
        raise LineProblem("not valid JSON") from None
    if not isinstance(data, dict):
        raise LineProblem("not a JSON object")
    return data


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each non-blank line; ``BatchFileError`` if it cannot be read."""
    try:
        with Path(path).open("rb") as file:
            for number, raw in enumerate(file, 1):
                if raw.strip():
                    yield number, raw
    except OSError as exc:
        raise BatchFileError(path, [(None, f"cannot read it: {exc.strerror}")]) from None


@attrs.define
class Scan:
    """What checking the requests file found.

    Attributes:
        total: requests in the file.
        done: requests already answered (in a results file, or in ``done=``).
        failed: requests already failed for good (in a results file).
        pending: the line numbers of the requests still to send, in file order.
        urls: requests still to send, per URL.
        models: requests still to send, per model.
    """

    total: int = 0
    done: int = 0
    failed: int = 0
    pending: array[int] = attrs.field(factory=lambda: array("I"))
    urls: Counter[str] = attrs.field(factory=Counter)
    models: Counter[str] = attrs.field(factory=Counter)


def scan_requests(
    path: str,
    endpoints: Mapping[tuple[str, str], str],
    *,
    done: Container[str] = (),
    failed: Container[str] = (),
) -> Scan:
    """Check every line of the requests file; which ones are still to send.

    Raises:
        BatchFileError: a line is malformed, or an id repeats (nothing is sent then).
    """
    scan = Scan()
    seen = IdSet()
    problems = _Problems(path)
    for number, raw in _lines(path):
        try:
            line = parse_request(number, raw, endpoints)
        except LineProblem as problem:
            problems.add(number, problem.reason)
            if problem.custom_id is not None:
                seen.add(problem.custom_id)
            continue
        if not seen.add(line.custom_id):
            problems.add(number, "", repeated=line.custom_id)
            continue
        scan.total += 1
        if line.custom_id in done:
            scan.done += 1
        elif line.custom_id in failed:
            scan.failed += 1
        else:
            scan.pending.append(number)
            scan.urls[line.url] += 1
            scan.models[line.model] += 1
    problems.raise_if_any(endpoints)
    if not scan.total:
        raise BatchFileError(path, [(None, "holds no request")])
    return scan


class _Problems:
    """The problems of a requests file: the first ``MAX_PROBLEMS`` kept, all counted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.kept: list[tuple[int, str]] = []
        self.repeated: dict[int, str] = {}  # line -> the id it repeats (kept lines only)
        self.count = 0

    def add(self, number: int, reason: str, *, repeated: str | None = None) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append((number, reason))
            if repeated is not None:
                self.repeated[number] = repeated

    def raise_if_any(self, endpoints: Mapping[tuple[str, str], str]) -> None:
        """Raise ``BatchFileError`` with every kept problem in words, if there is one."""
        if not self.count:
            return
        first = self._first_lines(endpoints)
        worded: list[tuple[int | None, str]] = []
        for number, reason in self.kept:
            custom_id = self.repeated.get(number)
            if custom_id is None:
                worded.append((number, reason))
            elif first[custom_id] < number:
                earlier = first[custom_id]
                worded.append(
                    (number, f"duplicate custom_id {custom_id!r} (first on line {earlier})")
                )
            else:  # no earlier line has this very id: another id shares its hash
                worded.append((number, f"custom_id {custom_id!r} shares its hash with another"))
        raise BatchFileError(self.path, worded, count=self.count)

    def _first_lines(self, endpoints: Mapping[tuple[str, str], str]) -> dict[str, int]:
        """The line each repeated id first stands on (a second look at the file).

        Ids are compared by hash while checking; this look compares the ids themselves.
        """
        wanted = set(self.repeated.values())
        first: dict[str, int] = {}
        if not wanted:
            return first
        for number, raw in _lines(self.path):
            try:
                custom_id: str | None = parse_request(number, raw, endpoints).custom_id
            except LineProblem as problem:
                custom_id = problem.custom_id
            if custom_id in wanted and custom_id not in first:
                first[custom_id] = number
        return first


def pending_lines(
    path: str, pending: array[int], endpoints: Mapping[tuple[str, str], str]
) -> Iterator[BatchLine]:
    """The lines still to send, read again from the file in order.

    Raises:
        BatchFileError: the file changed since it was checked.
    """
    if not pending:
        return
    wanted = iter(pending)
    next_number = next(wanted)
    for number, raw in _lines(path):
        if number != next_number:
            continue
        try:
            yield parse_request(number, raw, endpoints)
        except LineProblem as problem:
            raise BatchFileError(path, [(number, f"changed while running: {problem}")]) from None
        next_number = next(wanted, 0)
        if not next_number:
            return
    raise BatchFileError(path, [(next_number, "changed while running: the line is gone")])


# -- results files --------------------------------------------------------------------


@attrs.define
class ResultsTally:
    """What one results file holds: ids answered, ids failed, and a torn tail's size."""

    done: int = 0
    failed: int = 0
    torn: int = 0


def scan_results(path: str, done: IdSet, failed: IdSet) -> ResultsTally:
    """Add the ids a results file holds to ``done`` or ``failed`` (by its ``error``).

    A missing file holds nothing. A last line without its newline (torn by a kill)
    is not counted: the caller repairs it, or reports it.

    Raises:
        BatchFileError: a complete line is not a batch result line.
    """
    tally = ResultsTally()
    if not Path(path).exists():
        return tally
    decoder = json.JSONDecoder()
    problems: list[tuple[int | None, str]] = []
    for number, raw in _lines(path):
        if not raw.endswith(b"\n"):
            tally.torn = len(raw)
            break
        try:
            custom_id, ok = _result_id(raw, decoder)
        except LineProblem as problem:
            problems.append((number, f"{problem.reason}; is this the right file?"))
            if len(problems) >= MAX_PROBLEMS:
                break
            continue
        if ok:
            tally.done += done.add(custom_id)
        else:
            tally.failed += failed.add(custom_id)
    if problems:
        raise BatchFileError(path, problems)
    return tally


def _result_id(raw: bytes, decoder: json.JSONDecoder) -> tuple[str, bool]:
    """(custom_id, answered) of one results line.

    Lines this SDK wrote start with ``{"id":"batch_req_…","custom_id":`` and end with
    ``"error":null}`` when answered: their id is read without parsing the (possibly
    large) body. Any other line is parsed whole.
    """
    if raw.startswith(_OUR_PREFIX):
        text = raw.decode("utf-8", "replace")
        start = text.find(_ID_FIELD)
        try:
            custom_id, _ = decoder.raw_decode(text, start + len(_ID_FIELD))
        except ValueError:
            custom_id = None
        if start > 0 and isinstance(custom_id, str) and custom_id:
            return custom_id, raw.rstrip().endswith(_DONE_SUFFIX)
    data = _json_object(raw)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or not {"response", "error"} <= data.keys():
        raise LineProblem("not a batch result line (custom_id, response, error)")
    return custom_id, data["error"] is None


class ResultsFile:
    """A results file open for appending whole lines, locked against a second run.

    Each line goes out in one ``os.write`` (repeated only if the kernel took part of
    it) on an ``O_APPEND`` descriptor. ``fsync`` is the caller's decision: ``sync``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd, self.created = _open_for_append(path)
        except OSError as exc:
            raise BatchFileError(path, [(None, f"cannot open it: {exc.strerror}")]) from None
        self.dirty = False
        try:
            _lock(self._fd)
        except OSError:
            os.close(self._fd)
            reason = "another batch run is writing it; wait for that run to end"
            raise BatchFileError(path, [(None, reason)]) from None

    def repair(self) -> int:
        """Cut off a torn last line (one without its newline); the bytes removed."""
        size = os.fstat(self._fd).st_size
        keep = _end_of_last_line(self.path, size)
        if keep < size:
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        return size - keep

    def append(self, data: bytes) -> None:
        """Append one whole line (``data`` ends with a newline)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.dirty = True

    def sync(self) -> None:
        """Flush what was appended to the disk (``fsync``), if anything was."""
        if self.dirty:
            self.dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        """Sync and close (which releases the lock); safe to call twice."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                if self.dirty:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def discard_if_new(self) -> None:
        """Close, and remove the file if this run created it and wrote nothing."""
        self.close()
        if self.created and Path(self.path).stat().st_size == 0:
            Path(self.path).unlink()


def _open_for_append(path: str) -> tuple[int, bool]:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | os.O_EXCL, 0o644)
    except FileExistsError:
        return os.open(path, flags), False
    _sync_directory(path)  # the new file's name survives a power cut too
    return fd, True


def _sync_directory(path: str) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(Path(path).resolve().parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    """An exclusive advisory lock, held until the descriptor closes (or the process dies)."""
    if sys.platform != "win32":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _end_of_last_line(path: str, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none)."""
    with Path(path).open("rb") as file:
        end = size
        while end > 0:
            start = max(0, end - _BLOCK)
            file.seek(start)
            newline = file.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


class BatchFiles:
    """The results files of one run: opened, locked, and a torn last line cut off.

    Answered requests go to the output file; failures to the errors file, or to the
    output file when there is none.
    """

    def __init__(self, output: str, errors: str | None) -> None:
        self.output = ResultsFile(output)
        self.errors: ResultsFile | None = None
        try:
            if errors is not None:
                self.errors = ResultsFile(errors)
            self.repaired = sum(file.repair() for file in self._files)
        except BaseException:
            self.discard_if_new()
            raise

    @property
    def _files(self) -> list[ResultsFile]:
        return [self.output] if self.errors is None else [self.output, self.errors]

    @property
    def dirty(self) -> bool:
        """Whether lines were written since the last ``sync``."""
        return any(file.dirty for file in self._files)

    def scan(self, input_path: str, endpoints: Mapping[tuple[str, str], str]) -> Scan:
        """Check the requests file; the results files say what is finished already."""
        done, failed = IdSet(), IdSet()
        for file in self._files:
            scan_results(file.path, done, failed)
        return scan_requests(input_path, endpoints, done=done, failed=failed)

    def write(self, line: bytes, *, ok: bool) -> None:
        """Append the results line of an answered (``ok``) or failed request."""
        target = self.output if ok or self.errors is None else self.errors
        target.append(line)

    def sync(self) -> None:
        """``fsync`` the files written to since the last sync."""
        for file in self._files:
            file.sync()

    def close(self) -> None:
        """Sync and close both files (releasing their locks)."""
        try:
            self.output.close()
        finally:
            if self.errors is not None:
                self.errors.close()

    def discard_if_new(self) -> None:
        """Close; remove a file this run created and did not write to."""
        for file in self._files:
            file.discard_if_new()
