"""The files of a batch: the id set, requests lines, results lines, appending, repair."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import request, write_requests

from wishub_async import _batchfiles, _batchresults
from wishub_async._batchfiles import (
    BatchFiles,
    IdSet,
    ResultsFile,
    pending_lines,
    scan_requests,
    scan_results,
)
from wishub_async.batch import ENDPOINTS
from wishub_async.exceptions import BatchFileError


def test_the_id_set_holds_many_ids_compactly() -> None:
    ids = IdSet()
    assert all(ids.add(f"request-{n}") for n in range(20_000))
    assert len(ids) == 20_000
    assert not ids.add("request-7")
    assert "request-19999" in ids
    assert "request-20000" not in ids
    assert 7 not in ids
    assert len(ids._slots) * 8 <= 20_000 * 8 * 4  # at most 32 bytes an id


def test_ids_that_share_a_hash_are_told_apart_from_true_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_batchfiles, "_digest", lambda _: 1)
    path = write_requests(tmp_path / "in.jsonl", [request("a"), request("b"), request("a")])
    with pytest.raises(BatchFileError) as caught:
        scan_requests(str(path), ENDPOINTS)
    assert caught.value.problems == (
        (2, "custom_id 'b' shares its hash with another"),
        (3, "duplicate custom_id 'a' (first on line 1)"),
    )


def test_a_bad_line_with_an_id_still_counts_for_repeats(tmp_path: Path) -> None:
    lines = [{**request("a"), "url": "/v1/nope"}, request("a")]
    with pytest.raises(BatchFileError) as caught:
        scan_requests(str(write_requests(tmp_path / "in.jsonl", lines)), ENDPOINTS)
    assert [line for line, _ in caught.value.problems] == [1, 2]
    assert caught.value.problems[1][1] == "duplicate custom_id 'a' (first on line 1)"


def test_method_case_is_forgiven(tmp_path: Path) -> None:
    path = write_requests(tmp_path / "in.jsonl", [{**request("a"), "method": "post"}])
    [line] = pending_lines(str(path), scan_requests(str(path), ENDPOINTS).pending, ENDPOINTS)
    assert (line.method, line.path, line.model) == ("POST", "/chat/completions", "m-1")


def test_pending_lines_notice_a_changed_file(tmp_path: Path) -> None:
    path = write_requests(tmp_path / "in.jsonl", [request("a"), request("b")])
    scan = scan_requests(str(path), ENDPOINTS)
    write_requests(path, [request("a"), "{"])
    with pytest.raises(BatchFileError, match="line 2: changed while running"):
        list(pending_lines(str(path), scan.pending, ENDPOINTS))
    write_requests(path, [request("a")])
    with pytest.raises(BatchFileError, match="line 2: changed while running: the line is gone"):
        list(pending_lines(str(path), scan.pending, ENDPOINTS))


def _line(custom_id: str, error: Any = None) -> bytes:
    record = {"id": "batch_req_1", "custom_id": custom_id, "response": None, "error": error}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def test_results_lines_written_elsewhere_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    spaced = {"custom_id": "c", "id": "x", "response": {"status_code": 200}, "error": None}
    path.write_bytes(
        _line("a")
        + _line("b", {"class": "BadRequestError"})
        + json.dumps(spaced).encode()
        + b"\r\n"
        + _line("d").replace(b"\n", b"\r\n")
        + b'{"id":"batch_req_1","custom_id":5,"response":null,"error":null}\n'
    )
    done, failed = IdSet(), IdSet()
    with pytest.raises(BatchFileError, match="line 5: not a batch result line"):
        scan_results(str(path), done, failed)
    assert "a" in done
    assert "b" in failed
    assert "c" in done
    assert "d" in done


def test_a_missing_results_file_holds_nothing(tmp_path: Path) -> None:
    done, failed = IdSet(), IdSet()
    tally = scan_results(str(tmp_path / "none.jsonl"), done, failed)
    assert (tally.done, tally.failed, tally.torn, len(done)) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b"", b""),
        (b"whole\n", b"whole\n"),
        (b"whole\ntorn", b"whole\n"),
        (b"torn only", b""),
        (b"a\n" + b"x" * 200_000, b"a\n"),  # the search for the newline crosses blocks
    ],
)
def test_repair_cuts_off_a_torn_last_line(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    results = ResultsFile(str(path))
    try:
        assert results.repair() == len(content) - len(kept)
    finally:
        results.close()
    assert path.read_bytes() == kept


def test_a_line_is_appended_whole_even_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    results = ResultsFile(str(path))
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    results.append(b"0123456789\n")
    monkeypatch.undo()
    results.append(b"next\n")
    results.sync()
    results.sync()  # nothing to flush: a no-op
    results.close()
    results.close()
    assert path.read_bytes() == b"0123456789\nnext\n"


def test_a_file_in_use_is_refused_and_a_new_empty_one_removed(tmp_path: Path) -> None:
    output, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    holder = ResultsFile(str(errors))
    try:
        with pytest.raises(BatchFileError, match="another batch run is writing it"):
            BatchFiles(str(output), str(errors))
    finally:
        holder.close()
    assert not output.exists()
    files = BatchFiles(str(output), str(errors))
    files.write(b"x\n", ok=True)
    files.discard_if_new()
    assert output.read_bytes() == b"x\n"
    assert errors.read_bytes() == b""  # it was there before this run: kept


def test_an_unopenable_results_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BatchFileError, match="cannot open it"):
        ResultsFile(str(tmp_path / "no-such-dir" / "out.jsonl"))


def test_the_error_pickles() -> None:
    import pickle  # noqa: PLC0415 - only here

    error = BatchFileError("in.jsonl", [(3, "not a JSON object"), (5, "no url")], count=7)
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (str(again), again.problems, again.count) == (str(error), error.problems, 7)
    assert str(error) == "in.jsonl, line 3: not a JSON object (and 6 more problems)"
    assert str(BatchFileError("f", [(None, "is in use")])) == "f: is in use"


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, (3, 4)),
        ({"usage": {"input_tokens": 5, "output_tokens": 6}}, (5, 6)),
        ({"usage": {"total_tokens": 9}}, (9, 0)),  # rerank, embeddings: all of it is input
        ({"usage": {"prompt_tokens": True, "completion_tokens": -1}}, (0, 0)),
        ({"usage": "none"}, (0, 0)),
        ([1, 2], (0, 0)),
    ],
)
def test_tokens_are_read_from_either_usage_shape(body: Any, tokens: tuple[int, int]) -> None:
    assert _batchresults.usage(body) == tokens


def test_a_lone_surrogate_is_written_escaped() -> None:
    result = _batchresults.BatchResult("q-\ud800", 1, _batchresults.BatchStatus.DONE)
    line = _batchresults.results_line(result)
    assert b"\\ud800" in line
    assert json.loads(line)["custom_id"] == "q-\ud800"
