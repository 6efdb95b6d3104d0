"""The batch benchmark behind ``nox -s bench`` and ``docs/batches.md``.

Against one loopback server (``batch_server.py``, its own process) it measures:

1. throughput: ``run_batch`` (file in, file out) against ``wh.map`` of the same chat
   calls (bodies in memory, answers parsed and dropped), alternating, best of
   ``--rounds``; per backend;
2. the cost of ``fsync`` after every line (``fsync_interval=0``) against once a second;
3. resends after a kill: ``wishub batch`` is SIGKILLed halfway through, then run again;
   the server counts requests beyond the first per custom_id;
4. memory: the peak RSS of ``wishub batch`` (a child process) for 10,000 and 200,000
   lines, and of ``--dry-run`` (checking only) for the same files.

    python benchmarks/batch.py [--requests 20000] [--rounds 3] [--out results/batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Literal, Self

import anyio

from wishub_async import AsyncWishub
from wishub_async.batch import run_batch

HERE = Path(__file__).resolve().parent
KEYS = [f"{n:032x}" for n in range(1, 5)]
MODEL = "bench-model"
Backend = Literal["httpx", "aiohttp"]


class Server:
    """``batch_server.py`` in its own process."""

    def __init__(self, latency: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "batch_server.py"), "--latency", str(latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = self.process.stdout.readline().strip() if self.process.stdout else ""
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stats(self) -> dict[str, int]:
        url = self.base_url.removesuffix("/v1") + "/stats"
        with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 - loopback
            stats: dict[str, int] = json.loads(reply.read())
        return stats

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate()


def body(n: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"q-{n}"}]}


def write_requests(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for n in range(count):
            line = {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions"}
            file.write(json.dumps({**line, "body": body(n)}) + "\n")
    return path


async def time_map(base_url: str, backend: Backend, count: int, concurrency: int) -> float:
    async with AsyncWishub(
        app_keys=KEYS, base_url=base_url, backend=backend, max_concurrency=concurrency
    ) as wh:
        started = time.perf_counter()
        outcomes = await wh.map(
            lambda view, item: view.chat.completions.create(**item), (body(n) for n in range(count))
        )
        elapsed = time.perf_counter() - started
    assert not outcomes.failed, outcomes.failed[0].error  # noqa: S101 - a benchmark's sanity
    return elapsed


async def time_batch(
    base_url: str, backend: Backend, requests: Path, concurrency: int, fsync_interval: float = 1.0
) -> float:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "out.jsonl"
        async with AsyncWishub(
            app_keys=KEYS, base_url=base_url, backend=backend, max_concurrency=concurrency
        ) as wh:
            started = time.perf_counter()
            summary = await run_batch(wh, requests, output, fsync_interval=fsync_interval)
            elapsed = time.perf_counter() - started
    assert summary.complete, summary  # noqa: S101 - a benchmark's sanity
    assert not summary.failed, summary  # noqa: S101
    return elapsed


def throughput(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    rows = []
    with Server() as server:
        for backend, count in (("aiohttp", args.requests), ("httpx", args.httpx_requests)):
            requests = write_requests(folder / f"throughput-{count}.jsonl", count)
            maps, batches = [], []
            for _ in range(args.rounds):
                maps.append(anyio.run(time_map, server.base_url, backend, count, 50))
                batches.append(anyio.run(time_batch, server.base_url, backend, requests, 50))
            best_map, best_batch = min(maps), min(batches)
            rows.append(
                {
                    "backend": backend,
                    "requests": count,
                    "concurrency": 50,
                    "map_per_s": round(count / best_map),
                    "batch_per_s": round(count / best_batch),
                    "ratio": round(best_map / best_batch, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def fsync_cost(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    count = min(args.requests, 5000)
    requests = write_requests(folder / "fsync.jsonl", count)
    with Server() as server:
        each = min(
            anyio.run(time_batch, server.base_url, "aiohttp", requests, 50, 0.0) for _ in range(2)
        )
        second = min(
            anyio.run(time_batch, server.base_url, "aiohttp", requests, 50, 1.0) for _ in range(2)
        )
    row = {
        "requests": count,
        "every_line_per_s": round(count / each),
        "every_second_per_s": round(count / second),
    }
    print(json.dumps(row), flush=True)
    return row


def cli(base_url: str, requests: Path, output: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = ["-m", "wishub_async", "batch", str(requests), "-o", str(output), "--no-progress"]
    argv += ["--base-url", base_url, "--concurrency", "50", *extra]
    for key in KEYS:
        argv += ["--app-key", key]
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL)


def wait_for(condition: Any, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def resends(count: int, folder: Path) -> dict[str, Any]:
    requests = write_requests(folder / "kill.jsonl", count)
    output = folder / "kill-out.jsonl"
    with Server(latency=0.02) as server:
        process = cli(server.base_url, requests, output)
        wait_for(lambda: server.stats()["requests"] >= count // 2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        wait_for(lambda: server.stats()["connections"] == 0)
        at_kill = server.stats()["requests"]
        finished = output.read_bytes().count(b"\n")
        process = cli(server.base_url, requests, output)
        process.wait()
        stats = server.stats()
    row = {
        "requests": count,
        "concurrency": 50,
        "sent_before_kill": at_kill,
        "finished_before_kill": finished,
        "in_flight_at_kill": at_kill - finished,
        "resent": stats["resent"],
        "finished_in_the_end": output.read_bytes().count(b"\n"),
    }
    print(json.dumps(row), flush=True)
    return row


def peak_rss(process: subprocess.Popen[bytes]) -> int:
    """The child's peak resident memory, in MiB (it must not have been waited for)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_maxrss / 1024)


def memory(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    rows = []
    with Server() as server:
        for count in args.memory_lines:
            requests = write_requests(folder / f"memory-{count}.jsonl", count)
            output = folder / f"memory-{count}-out.jsonl"
            check = peak_rss(cli(server.base_url, requests, output, "--dry-run"))
            started = time.perf_counter()
            run = peak_rss(cli(server.base_url, requests, output))
            elapsed = time.perf_counter() - started
            assert output.read_bytes().count(b"\n") == count  # noqa: S101 - sanity
            rows.append(
                {
                    "lines": count,
                    "input_mib": round(requests.stat().st_size / 2**20, 1),
                    "output_mib": round(output.stat().st_size / 2**20, 1),
                    "dry_run_peak_rss_mib": check,
                    "run_peak_rss_mib": run,
                    "run_seconds": round(elapsed, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="for aiohttp")
    parser.add_argument("--httpx-requests", type=int, default=3_000, help="httpx is slower")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--memory-lines", type=int, nargs="*", default=[10_000, 200_000], metavar="N"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "batch.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        report = {
            "throughput": throughput(args, folder),
            "fsync": fsync_cost(args, folder),
            "resends_after_kill": resends(5000, folder),
            "memory": memory(args, folder),
        }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
