"""``wishub batch``, run in this process against a fake on a loopback port."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio.from_thread
import pytest
from batch_helpers import EMBEDDINGS, finished_ids, request, results, write_requests
from conftest import K1, K2, WRONG

from wishub_async._batchfiles import ResultsFile
from wishub_async._cli import main
from wishub_async._cli.batch import _Bar, _duration, default_backend
from wishub_async._cli.support import Progress
from wishub_async.batch import BatchSummary
from wishub_async.testing import FakeWishub

SUMMARY_LABELS = [
    "done",
    "failed",
    "not finished",
    "retried",
    "tokens in",
    "tokens out",
    "wall time",
    "rate",
]


@pytest.fixture
def platform() -> Iterator[tuple[FakeWishub, str]]:
    """A fake whose keys see m-1 and e-1, on a loopback port (a background thread)."""
    fake = FakeWishub([K1, K2], models=["m-1", "e-1"])
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        yield fake, base_url


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A requests file of 30 (two fail for good), and where results and errors go."""
    lines = [request(f"q-{n}") for n in range(27)]
    lines += [request("e-1", url=EMBEDDINGS, model="e-1")]
    lines += [request(f"bad-{n}", model="nope") for n in range(2)]
    requests = write_requests(tmp_path / "requests.jsonl", lines)
    return requests, tmp_path / "results.jsonl", tmp_path / "failed.jsonl"


class Job(NamedTuple):
    """The fake on its port, and a batch's files."""

    fake: FakeWishub
    base_url: str
    requests: Path
    output: Path
    errors: Path


@pytest.fixture
def job(platform: tuple[FakeWishub, str], files: tuple[Path, Path, Path]) -> Job:
    return Job(*platform, *files)


def batch(
    capsys: pytest.CaptureFixture[str], base_url: str, *argv: str | Path
) -> tuple[int, str, str]:
    keys = ["--app-key", K1, "--app-key", K2, "--base-url", base_url]
    code = main(["batch", *map(str, argv), *keys])
    out, err = capsys.readouterr()
    return code, out, err


def labels(out: str) -> list[str]:
    return [line.split(":", 1)[0] for line in out.splitlines()]


def test_a_run_writes_both_files_and_prints_the_summary_in_order(
    capsys: pytest.CaptureFixture[str], job: Job
) -> None:
    fake, base_url, requests, output, errors = job
    code, out, err = batch(capsys, base_url, requests, "-o", output, "-e", errors)
    assert code == 1  # two failed for good
    assert len(finished_ids(output)) == 28
    assert sorted(finished_ids(errors)) == ["bad-0", "bad-1"]
    assert labels(out) == SUMMARY_LABELS
    assert out.splitlines()[0] == "done:         28 this run; 28 of 30 in all"
    assert out.splitlines()[1] == f"failed:       2 this run; 2 in all, in {errors}"
    assert out.splitlines()[2] == "not finished: 0"
    assert err.splitlines()[0] == "wishub: 30 of 30 requests to send"
    assert err.splitlines()[-1].startswith("progress: 30/30 requests, 2 failed")
    assert K1 not in out + err
    # Again: nothing is sent, the batch still has its two failures.
    sent = len(fake.requests)
    code, out, err = batch(capsys, base_url, requests, "-o", output, "-e", errors)
    assert (code, len(fake.requests)) == (1, sent)
    assert out.splitlines()[0] == "done:         0 this run; 28 of 30 in all"


def test_all_answered_exits_0_and_json_prints_the_summary(
    capsys: pytest.CaptureFixture[str], platform: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    _, base_url = platform
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(5)])
    output = tmp_path / "out.jsonl"
    code, out, err = batch(capsys, base_url, requests, "-o", output, "--json", "--no-progress")
    summary = json.loads(out)
    assert code == 0
    assert (summary["done"], summary["failed"], summary["remaining"]) == (5, 0, 0)
    assert summary["prompt_tokens"] == 5
    assert "progress" not in err


def test_dry_run_checks_and_counts_without_sending(
    capsys: pytest.CaptureFixture[str], job: Job
) -> None:
    fake, base_url, requests, output, errors = job
    code, out, _ = batch(capsys, base_url, requests, "-o", output, "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        f"{requests}: 30 requests, all valid",
        "already done:   0",
        "already failed: 0",
        "to send:        30",
        "  url /v1/chat/completions: 29",
        "  url /v1/embeddings: 1",
        "  model m-1: 27",
        "  model nope: 2",
        "  model e-1: 1",
    ]
    assert not fake.requests
    assert not output.exists()
    code, out, _ = batch(capsys, base_url, requests, "-o", output, "-e", errors, "--json")
    assert code == 1
    code, out, _ = batch(
        capsys, base_url, requests, "-o", output, "-e", errors, "--dry-run", "--json"
    )
    plan = json.loads(out)
    assert (plan["total"], plan["done"], plan["failed"], plan["pending"]) == (30, 28, 2, 0)


def test_dry_run_needs_no_key(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WISHUB_APP_KEY", raising=False)
    requests, output, _ = files
    output.write_bytes(b'{"id":"batch_req_1","custom_id":"q-0","resp')
    assert main(["batch", str(requests), "-o", str(output), "--dry-run"]) == 0
    assert "a torn last line (43 bytes) will be cut off" in capsys.readouterr().out


def test_bad_input_names_each_line_exits_2_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], platform: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    fake, base_url = platform
    lines: list[dict[str, Any] | str] = [request("a"), "{oops", request("a")]
    lines.append({**request("b"), "url": "/v1/nope"})
    requests = write_requests(tmp_path / "requests.jsonl", lines)
    output = tmp_path / "results.jsonl"
    code, out, err = batch(capsys, base_url, requests, "-o", output)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        (
            "wishub: the requests file, line 2: not valid JSON: Expecting property name"
            " enclosed in double quotes (column 2)"
        ),
        "wishub: the requests file, line 3: duplicate custom_id 'a' (first on line 1)",
        (
            "wishub: the requests file, line 4: unknown url '/v1/nope' (known:"
            " /v1/chat/completions, /v1/embeddings, /v1/rerank, /v1/reranks)"
        ),
        "wishub: nothing was sent",
    ]
    assert not fake.requests
    assert not output.exists()


def test_more_problems_than_listed_are_counted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "requests.jsonl", ["{"] * 25)
    code = main(["batch", str(requests), "-o", str(tmp_path / "o.jsonl"), "--demo"])
    err = capsys.readouterr().err
    assert code == 2
    assert "wishub: ... and 5 more" in err


def test_a_results_file_in_use_exits_2(capsys: pytest.CaptureFixture[str], job: Job) -> None:
    fake, base_url, requests, output, _ = job
    holder = ResultsFile(str(output))
    try:
        code, _, err = batch(capsys, base_url, requests, "-o", output)
    finally:
        holder.close()
    assert code == 2
    assert "wishub: the output file: another batch run is writing it" in err
    assert not fake.requests


def test_stdin_as_input_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["batch", "-", "-o", str(tmp_path / "o.jsonl"), "--demo"]) == 2
    assert "read twice" in capsys.readouterr().err


def test_every_key_rejected_stops_early_with_exit_1(
    capsys: pytest.CaptureFixture[str], job: Job
) -> None:
    _, base_url, requests, output, _ = job
    code = main(
        ["batch", str(requests), "-o", str(output), "--app-key", WRONG, "--base-url", base_url]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "wishub: stopped early: every AppKey was rejected" in err
    assert "not finished: 30" in out
    assert WRONG not in out + err


def test_deferred_requests_say_to_run_again(
    capsys: pytest.CaptureFixture[str], platform: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    fake, base_url = platform
    fake.fail(type="INVOKE_MODEL_ERROR", times=3)
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    code, out, err = batch(capsys, base_url, requests, "-o", tmp_path / "o.jsonl")
    assert code == 1
    assert "not finished: 1" in out
    assert "wishub: 1 not finished. Run the same command again to resume" in err


def test_the_demo_runs_a_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = "4bd107bff85941239e27b1509eccfe98"
    requests = write_requests(tmp_path / "in.jsonl", [request("q", model=model)])
    assert main(["batch", str(requests), "-o", str(tmp_path / "o.jsonl"), "--demo"]) == 0
    assert finished_ids(tmp_path / "o.jsonl") == ["q"]


def test_help_shows_examples_formats_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    out = capsys.readouterr().out
    assert "wishub batch requests.jsonl -o results.jsonl --demo" in out
    assert "--dry-run" in out
    assert "urls: /v1/chat/completions, /v1/embeddings" in out
    assert '"custom_id": "q1"' in out
    assert "130  interrupted (Ctrl-C): run the same command again to resume" in out


def test_plain_progress_lines_come_at_most_every_interval(
    capsys: pytest.CaptureFixture[str], job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base_url, requests, output, _ = job
    ticks = itertools.count(0, 4.0)  # every draw is 4 s after the last: every third shows
    monkeypatch.setattr(Progress, "clock", staticmethod(lambda: next(ticks)))
    code, _, err = batch(capsys, base_url, requests, "-o", output, "--concurrency", "1")
    shown = [line for line in err.splitlines() if line.startswith("progress:")]
    assert code == 1
    assert 8 <= len(shown) <= 13
    assert shown[-1].startswith("progress: 30/30 requests, 2 failed")


def test_the_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = _Bar(stream)
    bar.clock = staticmethod(itertools.count(0, 1.0).__next__)
    bar.update(BatchSummary(100, done_before=40, done=10, failed=2, deferred=1, elapsed=2.0))
    bar.finish()
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .endswith(
            "[############------------] 52/100 requests, 2 failed, 1 not finished, 6.0/s, 8s left"
        )
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3600 * 5 + 120, "5h02m")]
)
def test_durations_read_well(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(
    capsys: pytest.CaptureFixture[str], platform: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    fake, base_url = platform
    ids = [f"q-{n}" for n in range(40)]
    requests = write_requests(tmp_path / "in.jsonl", [request(i) for i in ids])
    output = tmp_path / "out.jsonl"

    def interrupt_after_five() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if output.exists() and output.read_bytes().count(b"\n") >= 5:
                fake.fail(latency=3600, times=100)  # whatever is sent now never ends
                time.sleep(0.2)  # let the next calls reach the fake and hang there
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    fake.latency = 0.02
    interrupter = threading.Thread(target=interrupt_after_five)
    interrupter.start()
    code, out, err = batch(capsys, base_url, requests, "-o", output, "--concurrency", "2")
    interrupter.join()
    assert code == 130
    assert "wishub: stopping: closing the files (Ctrl-C again to stop at once)" in err
    assert err.splitlines()[-1] == (
        "wishub: interrupted. Run the same command again to resume"
        " (finished requests are not sent again)."
    )
    assert labels(out) == SUMMARY_LABELS
    written = finished_ids(output)
    assert 5 <= len(written) < 40
    results(output)  # whole lines only
    fake._scripts.clear()
    fake.latency = 0
    code, out, _ = batch(capsys, base_url, requests, "-o", output)
    assert code == 0
    assert sorted(finished_ids(output)) == sorted(ids)


@pytest.mark.parametrize(
    ("environment", "backend"),
    [
        ({}, "aiohttp"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "httpx"),
        ({"all_proxy": "x"}, "httpx"),
    ],
)
def test_the_default_backend_is_aiohttp_unless_a_proxy_is_set(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], backend: str
) -> None:
    for name in ("https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert default_backend() == backend


def test_httpx_can_be_chosen(
    capsys: pytest.CaptureFixture[str], platform: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    _, base_url = platform
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    code, _, _ = batch(capsys, base_url, requests, "-o", tmp_path / "o.jsonl", "--backend", "httpx")
    assert code == 0


def test_a_failed_write_says_how_to_resume(
    capsys: pytest.CaptureFixture[str],
    platform: tuple[FakeWishub, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, base_url = platform
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])

    def full(self: ResultsFile, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultsFile, "append", full)
    code, _, err = batch(capsys, base_url, requests, "-o", tmp_path / "o.jsonl")
    assert code == 1
    assert "wishub: writing the results failed: No space left on device." in err
    assert "Run the same command again to resume" in err


@pytest.mark.parametrize(
    "option", [["--concurrency", "0"], ["--fsync-interval", "-1"], ["--fsync-interval", "inf"]]
)
def test_bad_numbers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], option: list[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["batch", "in.jsonl", "-o", str(tmp_path / "o.jsonl"), *option])
    assert caught.value.code == 2
    assert "must be" in capsys.readouterr().err
