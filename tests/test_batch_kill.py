"""``wishub batch`` killed and interrupted for real, in subprocesses, then resumed.

The platform is ``batch_server.py`` in its own process: it counts the requests it
receives per custom_id. After each kill the test waits until the killed process's
connections are gone (so every request it sent is counted), then compares the counts
with what the files hold. Nothing here measures time: waits are generous bounds on
polling, never assertions.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import EMBEDDINGS, request, write_requests
from conftest import K1, K2

HERE = Path(__file__).parent
CONCURRENCY = 8


class Platform:
    """The counting server, in its own process."""

    def __init__(self, latency: float) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our script
            [sys.executable, str(HERE / "batch_server.py"), "--latency", str(latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        assert self.base_url.startswith("http://127.0.0.1:")
        self.root = self.base_url.removesuffix("/v1")
        self.clients: list[subprocess.Popen[str]] = []

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/stats", timeout=30) as reply:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(reply.read())
        return stats

    def counts(self) -> Counter[str]:
        return Counter(self.stats()["counts"])

    def quiet(self) -> Counter[str]:
        """The counts once no client connection is left (a killed client's are closed)."""
        wait_for(lambda: self.stats()["connections"] == 0)
        return self.counts()

    def release(self) -> None:
        post = urllib.request.Request(self.root + "/release", data=b"", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(post, timeout=30):  # noqa: S310 - loopback
            pass

    def close(self) -> None:
        """Stop the server, and any batch a failed test left running."""
        for process in [*self.clients, self.process]:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.fixture
def platform() -> Iterator[Platform]:
    server = Platform(latency=0.02)
    try:
        yield server
    finally:
        server.close()


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds; a generous bound, not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true")
        time.sleep(0.01)


def start(
    platform: Platform, requests: Path, output: Path, errors: Path, *extra: str, **popen: Any
) -> subprocess.Popen[str]:
    argv = [str(requests), "-o", str(output), "-e", str(errors), "--base-url", platform.base_url]
    argv += ["--app-key", K1, "--app-key", K2, "--concurrency", str(CONCURRENCY), *extra]
    prelude = popen.pop("prelude", "")
    code = f"{prelude}import sys; from wishub_async._cli import main; sys.exit(main())"
    process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, "-c", code, "batch", *argv],
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.PIPE),
        text=True,
        **popen,
    )
    platform.clients.append(process)
    return process


def whole_lines(*paths: Path) -> list[dict[str, Any]]:
    """The complete lines of the files; a torn last line (a kill's) is left out."""
    lines = []
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            lines += [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return lines


def ids_in(*paths: Path) -> list[str]:
    return [line["custom_id"] for line in whole_lines(*paths)]


def written(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths if path.exists())


def the_batch(tmp_path: Path, size: int) -> tuple[Path, Path, Path, list[str]]:
    ids = []
    for n in range(size):
        prefix = "bad" if n % 20 == 3 else "flaky" if n % 20 == 11 else "r"
        ids.append(f"{prefix}-{n}")
    lines = [
        request(i, url=EMBEDDINGS, model="e-1") if n % 4 == 1 else request(i)
        for n, i in enumerate(ids)
    ]
    requests = write_requests(tmp_path / "requests.jsonl", lines)
    return requests, tmp_path / "results.jsonl", tmp_path / "failed.jsonl", ids


def base_count(custom_id: str) -> int:
    """Requests a custom_id takes in a run nobody kills (a flaky one fails once first)."""
    return 2 if custom_id.startswith("flaky-") else 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_points_each_custom_id_ends_exactly_once(
    platform: Platform, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - kill points, not secrets
    requests, output, errors, ids = the_batch(tmp_path, 300)
    allowance: Counter[str] = Counter()  # extra sends each id may take: once per kill in flight
    finished_counts: dict[str, int] = {}  # id -> requests when first seen finished
    before: Counter[str] = Counter()
    in_flight_at_kills = []
    for _ in range(4):
        process = start(platform, requests, output, errors)
        target = sum(before.values()) + rng.randint(0, 120)
        wait_for(lambda: sum(platform.counts().values()) >= target or process.poll() is not None)  # noqa: B023
        process.send_signal(signal.SIGKILL)
        process.communicate()
        counts = platform.quiet()
        done = set(ids_in(output, errors))
        for custom_id in done:
            finished_counts.setdefault(custom_id, counts[custom_id])
        sent = {custom_id for custom_id in counts if counts[custom_id] > before[custom_id]}
        in_flight = sent - done
        assert len(in_flight) <= CONCURRENCY
        in_flight_at_kills.append(len(in_flight))
        allowance.update(in_flight)
        before = counts
    process = start(platform, requests, output, errors)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err  # the bad- requests failed for good
    counts = platform.quiet()
    assert sorted(ids_in(output, errors)) == sorted(ids)  # each exactly once
    assert {line["custom_id"] for line in whole_lines(errors)} == {
        i for i in ids if i[:4] == "bad-"
    }
    assert all(line["error"] is None for line in whole_lines(output))
    for custom_id, count in finished_counts.items():
        assert counts[custom_id] == count, f"{custom_id} was sent again after it finished"
    resent = 0
    for custom_id in ids:
        extra = counts[custom_id] - base_count(custom_id)
        assert 0 <= extra <= allowance[custom_id], custom_id
        resent += extra
    assert resent <= sum(in_flight_at_kills) <= 4 * CONCURRENCY
    assert "not finished: 0" in out


def test_ctrl_c_once_stops_cleanly_and_says_how_to_resume(
    platform: Platform, tmp_path: Path
) -> None:
    ids = [f"r-{n}" for n in range(20)] + [f"hang-{n}" for n in range(3)]
    requests = write_requests(tmp_path / "requests.jsonl", [request(i) for i in ids])
    output, errors = tmp_path / "results.jsonl", tmp_path / "failed.jsonl"
    process = start(platform, requests, output, errors, stderr=subprocess.STDOUT)
    wait_for(lambda: written(output) == 20 and platform.counts()["hang-2"] == 1)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    lines = out.splitlines()
    order = [
        "wishub: stopping: closing the files (Ctrl-C again to stop at once)",
        "done:         20 this run; 20 of 23 in all",
        "not finished: 3",
        "rate:",
        "wishub: interrupted. Run the same command again to resume",
    ]
    positions = [next(n for n, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions), out
    assert lines[-1].startswith(order[-1])
    assert sorted(ids_in(output)) == sorted(ids[:20])
    assert output.read_bytes().endswith(b"\n")
    platform.release()
    again = start(platform, requests, output, errors)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert sorted(ids_in(output)) == sorted(ids)
    counts = platform.quiet()
    assert {i: counts[i] for i in ids if counts[i] != 1} == {f"hang-{n}": 2 for n in range(3)}


def test_a_second_ctrl_c_stops_at_once(platform: Platform, tmp_path: Path) -> None:
    ids = [f"r-{n}" for n in range(10)] + ["hang-0"]
    requests = write_requests(tmp_path / "requests.jsonl", [request(i) for i in ids])
    output, errors = tmp_path / "results.jsonl", tmp_path / "failed.jsonl"
    output.write_bytes(b"")  # present already: no directory sync when they are opened
    errors.write_bytes(b"")
    log = tmp_path / "stderr.txt"
    # The clean stop flushes the files last; here that flush never ends.
    hang = "import os, time; os.fsync = lambda fd: time.sleep(3600); "
    with log.open("w") as stderr:
        process = start(
            platform, requests, output, errors, "--fsync-interval", "3600",
            prelude=hang, stderr=stderr,
        )  # fmt: skip
        wait_for(lambda: written(output) == 10 and platform.counts()["hang-0"] == 1)
        process.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping" in log.read_text())
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 130
    assert "wishub: stopped at once; every line written is whole." in log.read_text()
    assert sorted(ids_in(output)) == sorted(ids[:10])
    assert output.read_bytes().endswith(b"\n")
