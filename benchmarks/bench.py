"""The side-by-side benchmark behind ``nox -s bench`` and ``docs/performance.md``.

1. Starts the loopback server (``server.py``) in its own process, twice more with a
   latency (20 ms and 500 ms), and shows with a raw-socket load run
   (``clients.py load``) how much the server sustains on its own.
2. Runs the reference job (``GET /v1/models``, 40 models, parsed) through every client
   in ``MAIN``, each measurement in a fresh process, alternating clients round after
   round, at each concurrency (requests a second; p50 and p99 per call).
3. The budget step's cost: an embedding (a call naming a model) with no budget, with
   a configured limit that never binds, and adaptive (past its slow start); and, with
   valgrind installed, its instructions a call (``budget_step_count.py``), the
   measure its target is checked by.
4. A fan-out of 200 keys x 5 calls at concurrency 100 against its ideal wall time
   (``fanout.py``), the memory a call in flight holds (``clients.py --in-flight``),
   our own per-request overhead (``overhead.py``) and the memory of a fan-out over
   10,000 keys (``memory.py``).
5. Prints every ratio against its target and writes ``bench.json``, ``bench.md`` and
   ``bench.png`` into ``--out`` (the chart also to ``--docs-chart``).

    python benchmarks/bench.py --rounds 5 --duration 1.5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from server import MODEL_COUNT

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REFERENCE = 50
"""The concurrency every throughput target applies at."""
MAIN = [
    "wishub-httpx",
    "wishub-aiohttp",
    "wishub-aiohttp-json",
    "raw-httpx",
    "raw-httpx-defaults",
    "raw-aiohttp",
    "raw-aiohttp-cattrs",
    "openai",
]
BUDGET = ["embed-none", "embed-limits", "embed-adaptive"]
ADAPTIVE_WARMUP = 8.0
"""Seconds before the adaptive client is counted: its slow start (10 calls a second,
doubling each second of successes) is over by then, so what is measured is its cost."""
FANOUT = ["wishub-httpx", "wishub-aiohttp", "raw-httpx", "raw-aiohttp"]
FANOUT_LATENCIES = [0.5, 0.02]
FANOUT_TARGET = (0.5, 1.2)
"""At 500 ms a call, the default transport's fan-out within 1.2x its ideal wall time."""
IN_FLIGHT = ["wishub-httpx", "wishub-aiohttp", "raw-httpx", "raw-aiohttp", "openai"]
LABELS = {
    "wishub-httpx": "wishub_async (httpx, default)",
    "wishub-aiohttp": "wishub_async (aiohttp, speed extra)",
    "wishub-aiohttp-json": "wishub_async (aiohttp, stdlib json)",
    "raw-httpx": "raw httpx, pool sized to c",
    "raw-httpx-defaults": "raw httpx, its defaults",
    "raw-aiohttp": "raw aiohttp GET + json",
    "raw-aiohttp-cattrs": "raw aiohttp + json + cattrs",
    "openai": "OpenAI SDK models.list()",
    "embed-none": "embedding, no budget",
    "embed-limits": "embedding, limits= never binding",
    "embed-adaptive": "embedding, adaptive (after its slow start)",
}
SHORT = {
    "wishub-httpx": "wishub\nhttpx\n(default)",
    "wishub-aiohttp": "wishub\naiohttp",
    "wishub-aiohttp-json": "wishub\naiohttp\nstdlib json",
    "raw-httpx": "raw\nhttpx",
    "raw-httpx-defaults": "raw httpx\ndefaults",
    "raw-aiohttp": "raw\naiohttp",
    "raw-aiohttp-cattrs": "raw aiohttp\n+ cattrs",
    "openai": "OpenAI\nSDK",
}
RATIOS = [
    # (name, numerator, denominator, target at REFERENCE or None)
    ("wishub default / raw httpx (pool sized to c)", "wishub-httpx", "raw-httpx", 0.95),
    ("wishub default / raw httpx (its defaults)", "wishub-httpx", "raw-httpx-defaults", None),
    ("wishub aiohttp / raw aiohttp + cattrs", "wishub-aiohttp", "raw-aiohttp-cattrs", 0.95),
    ("wishub aiohttp / raw aiohttp", "wishub-aiohttp", "raw-aiohttp", 0.7),
    ("wishub aiohttp / OpenAI SDK", "wishub-aiohttp", "openai", 6.0),
    (
        "wishub aiohttp, stdlib json / raw aiohttp + cattrs",
        "wishub-aiohttp-json",
        "raw-aiohttp-cattrs",
        None,
    ),
    # Measured here as throughput, for the record; its target is checked by instruction
    # count (budget_step_count.py): the rounds' noise on this machine exceeds the step.
    ("budget step: limits never binding / none", "embed-limits", "embed-none", None),
    ("budget step: adaptive / none", "embed-adaptive", "embed-none", None),
]
_STEP_MODES = {
    "none": "no budget (`RateLimit()`)",
    "requests": "a limit of requests",
    "limits": "a limit of requests and tokens",
}
BUDGET_STEP_TARGET = 0.05
"""The budget step (limits that never bind) costs at most 5 % of a call's instructions."""
PACKAGES = [
    "wishub-async",
    "httpx",
    "httpcore",
    "aiohttp",
    "openai",
    "anyio",
    "attrs",
    "cattrs",
    "orjson",
    "uvloop",
]


def _python(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run a benchmark script in a fresh interpreter; its last stdout line is JSON."""
    command = [sys.executable, str(HERE / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _start_server(latency: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, str(HERE / "server.py"), "--latency", str(latency)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    port = server.stdout.readline().strip() if server.stdout else ""
    if not port.isdigit():
        server.kill()
        raise RuntimeError("the benchmark server did not start")
    return server, f"http://127.0.0.1:{port}/v1"


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    rates = [sample["rps"] for sample in samples]
    median = statistics.median(rates)
    return {
        "median": round(median, 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "spread_pct": round((max(rates) - min(rates)) / median * 100, 1) if median else 0.0,
        "samples": [round(rate, 1) for rate in rates],
        "p50_ms": round(statistics.median(sample["p50_ms"] for sample in samples), 3),
        "p99_ms": round(statistics.median(sample["p99_ms"] for sample in samples), 3),
    }


def _ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, numerator, denominator, target in RATIOS:
        for concurrency, by_client in sorted(results.items(), key=lambda item: int(item[0])):
            if numerator not in by_client or denominator not in by_client:
                continue
            up, down = by_client[numerator], by_client[denominator]
            per_round = [a / b for a, b in zip(up["samples"], down["samples"], strict=True) if b]
            ratio = up["median"] / down["median"] if down["median"] else float("inf")
            applies = target is not None and int(concurrency) == REFERENCE
            rows.append(
                {
                    "name": name,
                    "concurrency": int(concurrency),
                    "ratio": round(ratio, 2),
                    "per_round_min": round(min(per_round), 2) if per_round else None,
                    "per_round_max": round(max(per_round), 2) if per_round else None,
                    "target": target if applies else None,
                    "met": (ratio >= target) if applies and target is not None else None,
                }
            )
    return rows


class _Rounds:
    """Measurements in fresh processes, alternating clients round after round."""

    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args, self.url = args, url
        self.samples: dict[str, dict[str, list[dict[str, float]]]] = {}

    def run(self, clients: list[str], concurrencies: list[int]) -> None:
        args = self.args
        for round_index in range(args.rounds):
            shift = round_index % len(clients)
            for concurrency in concurrencies:
                for client in clients[shift:] + clients[:shift]:
                    warmup = ADAPTIVE_WARMUP if client == "embed-adaptive" else args.warmup
                    result = _python(
                        "clients.py",
                        client,
                        "--url",
                        self.url,
                        "-c",
                        str(concurrency),
                        "-d",
                        str(args.duration),
                        "-w",
                        str(warmup),
                        timeout=args.duration + warmup + 120,
                    )
                    by_client = self.samples.setdefault(str(concurrency), {})
                    by_client.setdefault(client, []).append(result)
                    print(
                        f"round {round_index + 1}/{args.rounds} c={concurrency:>3} "
                        f"{client:<20} {result['rps']:8.0f} req/s",
                        flush=True,
                    )

    def results(self) -> dict[str, dict[str, Any]]:
        return {
            c: {client: _summary(runs) for client, runs in by_client.items()}
            for c, by_client in self.samples.items()
        }


def _fanouts(slow: dict[float, str]) -> list[dict[str, Any]]:
    rows = []
    for latency, url in slow.items():
        for client in FANOUT:
            row = _python("fanout.py", client, "--url", url, "--latency", str(latency), timeout=600)
            applies = latency == FANOUT_TARGET[0] and client == "wishub-httpx"
            row["target"] = FANOUT_TARGET[1] if applies else None
            row["met"] = row["ratio_to_ideal"] <= FANOUT_TARGET[1] if applies else None
            rows.append(row)
            print(f"fan-out {latency * 1000:.0f} ms {client:<15} {row['ratio_to_ideal']:.2f}x")
    return rows


def _budget_step(url: str) -> list[dict[str, Any]]:
    """The budget step's instructions a call (valgrind), against its target; [] without."""
    if shutil.which("valgrind") is None:
        print("valgrind not found: the budget step is not counted", file=sys.stderr)
        return []
    counted = _python("budget_step_count.py", "--url", url, "--json", timeout=3600)
    return [
        {
            "mode": mode,
            "instructions": counted["instructions"][mode],
            "extra": counted["extra"][mode],
            "target": None if mode == "none" else BUDGET_STEP_TARGET,
            "met": None if mode == "none" else counted["extra"][mode] <= BUDGET_STEP_TARGET,
        }
        for mode in counted["instructions"]
    ]


def _in_flight(url: str) -> list[dict[str, Any]]:
    return [
        _python("clients.py", client, "--url", url, "--in-flight", "100", timeout=300)
        for client in IN_FLIGHT
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one benchmark run, as a JSON-ready dict."""
    servers = [_start_server(latency) for latency in (0.0, *FANOUT_LATENCIES)]
    url = servers[0][1]
    slow = {latency: servers[index + 1][1] for index, latency in enumerate(FANOUT_LATENCIES)}
    started = time.monotonic()
    try:
        top = str(max(args.concurrency))
        load = [
            _python(
                "clients.py",
                "load",
                "--url",
                url,
                "-c",
                top,
                "-d",
                str(args.duration),
                timeout=args.duration + 60,
            )["rps"]
            for _ in range(3)
        ]
        rounds = _Rounds(args, url)
        rounds.run(MAIN, args.concurrency)
        rounds.run(BUDGET, [REFERENCE])
        fanouts = _fanouts(slow)
        in_flight = _in_flight(slow[FANOUT_TARGET[0]])
        overhead = _python("overhead.py", timeout=300)
        budget_step = _budget_step(url)
        memory = [
            _python(
                "memory.py",
                "--url",
                url,
                "--backend",
                backend,
                "--keys",
                str(keys),
                "--max-concurrency",
                str(concurrency),
                timeout=600,
            )
            for backend, keys, concurrency in (
                ("aiohttp", args.memory_keys, 100),
                ("httpx", max(args.memory_keys // 5, 1), 100),
            )
        ]
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(timeout=10)
    results = rounds.results()
    fastest = max(row["median"] for row in results[top].values())
    capacity = max(load)  # what the server sustains; lower runs are load-generator noise
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "load_average": [round(value, 2) for value in os.getloadavg()],
        },
        "packages": {name: _version(name) for name in PACKAGES},
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "job": f"GET /v1/models ({MODEL_COUNT} models), reply parsed into objects / JSON",
        },
        "server": {
            "load_rps": [round(value, 1) for value in load],
            "capacity_rps": round(capacity, 1),
            "fastest_client_rps": fastest,
            "headroom": round(capacity / fastest, 2),
            "ok": capacity >= 3 * fastest,
        },
        "results": results,
        "ratios": _ratios(results),
        "fanout": fanouts,
        "in_flight": in_flight,
        "overhead_us": overhead,
        "budget_step": budget_step,
        "memory": memory,
        "seconds": round(time.monotonic() - started, 1),
    }


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables (``bench.md``)."""
    settings, machine = report["settings"], report["machine"]
    load = ", ".join(f"{value:g}" for value in machine.get("load_average", []))
    lines = [
        f"Run {report['when']}: {settings['rounds']} rounds of {settings['duration_s']:g} s"
        " per client and concurrency, alternating; "
        f"Python {machine['python']}, {machine['cpus']} CPUs, {machine['system']}"
        + (f", load average at the end {load}." if load else "."),
        f"Job: {settings['job']}.",
        "",
        *_throughput_table(report, MAIN),
        "",
        "| ratio (of medians) | c | ratio | per-round range | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    lines += [
        _row(
            row["name"],
            row["concurrency"],
            f"{row['ratio']:.2f}x",
            f"{row['per_round_min']:.2f}-{row['per_round_max']:.2f}",
            _target("≥", row["target"], "g"),
            _met(row["met"]),
        )
        for row in report["ratios"]
    ]
    lines += ["", "Budget step (`embeddings.create` on the aiohttp transport):", ""]
    lines += _throughput_table(report, BUDGET)
    if report.get("budget_step"):
        lines += [
            "",
            "| budget step, counted (valgrind) | instructions a call | extra | target | met |",
            "|---|---:|---:|---:|:---:|",
        ]
        lines += [
            _row(
                _STEP_MODES[row["mode"]],
                f"{row['instructions']:,.0f}",
                f"{row['extra']:+.1%}",
                _target("≤", row["target"], ".0%"),
                _met(row["met"]),
            )
            for row in report["budget_step"]
        ]
    lines += [
        "",
        "| fan-out, 200 keys x 5 calls, c=100 | latency | ideal | wall | ratio | target | met |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    lines += [
        _row(
            LABELS[row["client"]],
            f"{row['latency_s'] * 1000:.0f} ms",
            f"{row['ideal_s']:.2f} s",
            f"{row['wall_s']:.2f} s",
            f"{row['ratio_to_ideal']:.2f}x",
            _target("≤", row["target"], "g"),
            _met(row["met"]),
        )
        for row in report["fanout"]
    ]
    lines += ["", "| memory per call in flight (100 calls) | bytes |", "|---|---:|"]
    lines += [
        _row(LABELS[row["client"]], f"{row['bytes_per_call']:,.0f}") for row in report["in_flight"]
    ]
    server = report["server"]
    capacity = (
        f"Server alone (raw-socket load run, c={max(settings['concurrency'])}, best of "
        f"{len(server['load_rps'])}): {server['capacity_rps']:,.0f} req/s = "
        f"{server['headroom']:.1f}x the fastest client ({server['fastest_client_rps']:,.0f}"
        f" req/s); needs ≥ 3x: {'yes' if server['ok'] else '**no**'}."
    )
    lines += [
        "",
        capacity,
        "",
        "Our own per-request overhead (stub transport, no network): "
        + ", ".join(
            f"{name.removesuffix('_us')} {value:.1f} µs"
            for name, value in report["overhead_us"].items()
        )
        + ".",
        "",
        (
            "| fan-out memory | keys | max_concurrency | connections opened | client B/key "
            "| peak B/key | results B/key | seconds (tracemalloc on) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        _row(
            row["backend"],
            f"{row['keys']:,}",
            row["max_concurrency"],
            row["connections_opened"],
            f"{row['client_bytes_per_key']:,}",
            f"{row['peak_bytes_per_key']:,}",
            f"{row['results_bytes_per_key']:,}",
            row["seconds"],
        )
        for row in report["memory"]
    ]
    return "\n".join(lines) + "\n"


def _row(*cells: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def _target(sign: str, target: float | None, spec: str) -> str:
    return "" if target is None else f"{sign} {target:{spec}}"


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def _throughput_table(report: dict[str, Any], clients: list[str]) -> list[str]:
    """One row per client: req/s (median, spread), p50 and p99 at each concurrency."""
    concurrencies = [
        c
        for c in sorted(report["results"], key=int)
        if any(client in report["results"][c] for client in clients)
    ]
    cells = " | ".join(f"c={c} req/s | c={c} spread | c={c} p50 / p99 ms" for c in concurrencies)
    lines = [f"| client | {cells} |", "|---|" + "---:|---:|---:|" * len(concurrencies)]
    for client in clients:
        row_cells = []
        for c in concurrencies:
            row = report["results"][c].get(client)
            if row is None:
                row_cells += ["", "", ""]
                continue
            spread = f"{row['min']:,.0f}-{row['max']:,.0f} (±{row['spread_pct'] / 2:.0f}%)"
            row_cells += [
                f"{row['median']:,.0f}",
                spread,
                f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f}",
            ]
        lines.append(_row(LABELS[client], *row_cells))
    return lines


def chart(report: dict[str, Any], path: Path) -> None:
    """Median req/s per client, one panel per concurrency, min-max as error bars."""
    import matplotlib as mpl  # noqa: PLC0415 - only the bench session installs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    concurrencies = sorted(report["results"], key=int)
    figure, _ = plt.subplots(1, len(concurrencies), figsize=(6 * len(concurrencies), 4.2))
    for axis, c in zip(list(figure.axes), concurrencies, strict=True):
        rows = [report["results"][c][client] for client in MAIN]
        medians = [row["median"] for row in rows]
        errors = [
            [row["median"] - row["min"] for row in rows],
            [row["max"] - row["median"] for row in rows],
        ]
        colors = [
            "#1f77b4",
            "#d62728",
            "#ff9896",
            "#7f7f7f",
            "#bcbcbc",
            "#2ca02c",
            "#98df8a",
            "#9467bd",
        ]
        axis.bar(range(len(rows)), medians, yerr=errors, color=colors, capsize=4)
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels([SHORT[client] for client in MAIN], fontsize=7)
        axis.set_title(f"concurrency {c}")
        axis.set_ylabel("requests/s (median, min-max)")
        for index, value in enumerate(medians):
            axis.annotate(
                f"{value:,.0f}",
                (index, value),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
    figure.suptitle("GET /v1/models on a loopback server, parsed (higher is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, REFERENCE])
    parser.add_argument("--memory-keys", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--docs-chart",
        default=str(ROOT / "docs" / "images" / "bench.png"),
        help="where else to copy the chart ('' for nowhere)",
    )
    parser.add_argument(
        "--from-json", type=Path, help="redraw the table and chart of an earlier bench.json"
    )
    args = parser.parse_args(argv)
    report = json.loads(args.from_json.read_text()) if args.from_json else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    table = markdown(report)
    (args.out / "bench.md").write_text(table)
    chart(report, args.out / "bench.png")
    if args.docs_chart:
        docs_chart = Path(args.docs_chart)
        docs_chart.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "bench.png", docs_chart)
    print(table)
    missed = [row["name"] for row in report["ratios"] if row["met"] is False]
    missed += [f"fan-out {row['client']}" for row in report["fanout"] if row["met"] is False]
    missed += [
        f"budget step ({row['mode']})"
        for row in report.get("budget_step", [])
        if row["met"] is False
    ]
    if missed or not report["server"]["ok"]:
        print("targets not met: " + ", ".join(missed), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
