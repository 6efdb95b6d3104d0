"""The side-by-side benchmark behind ``nox -s bench`` and ``docs/performance.md``.

1. Starts the loopback server (``server.py``) in its own process and shows with a
   plain load run (``clients.py load``) how much it sustains on its own.
2. Runs the same job (``GET /v1/models``, parsed) through every client in
   ``clients.CLIENTS``, each measurement in a fresh process, alternating clients
   round after round, at each concurrency.
3. Measures our own per-request overhead (``overhead.py``) and the memory of a
   fan-out over 10,000 keys (``memory.py``).
4. Writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out`` and copies the
   chart to ``--docs-chart``.

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

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENT_ORDER = [
    "wishub-httpx",
    "wishub-aiohttp",
    "raw-httpx",
    "raw-httpx-keep100",
    "raw-aiohttp",
    "openai",
]
LABELS = {
    "wishub-httpx": "wishub_async (httpx, default)",
    "wishub-aiohttp": "wishub_async (aiohttp)",
    "raw-httpx": "raw httpx GET + json",
    "raw-httpx-keep100": "raw httpx, 100 kept alive",
    "raw-aiohttp": "raw aiohttp GET + json",
    "openai": "OpenAI SDK models.list()",
}
SHORT = {
    "wishub-httpx": "wishub\nhttpx\n(default)",
    "wishub-aiohttp": "wishub\naiohttp",
    "raw-httpx": "raw\nhttpx",
    "raw-httpx-keep100": "raw httpx,\n100 kept\nalive",
    "raw-aiohttp": "raw\naiohttp",
    "openai": "OpenAI\nSDK",
}
RATIOS = [
    # (name, numerator, denominator, target at the highest concurrency or None)
    ("wishub aiohttp / OpenAI SDK", "wishub-aiohttp", "openai", 6.0),
    ("wishub aiohttp / raw aiohttp", "wishub-aiohttp", "raw-aiohttp", 0.6),
    ("wishub default / raw httpx", "wishub-httpx", "raw-httpx", 0.95),
    ("wishub default / raw httpx, 100 kept alive", "wishub-httpx", "raw-httpx-keep100", None),
    ("raw aiohttp / raw httpx", "raw-aiohttp", "raw-httpx", None),
    ("OpenAI SDK / raw httpx", "openai", "raw-httpx", None),
]
PACKAGES = ["wishub-async", "httpx", "httpcore", "aiohttp", "openai", "httpx2", "anyio", "cattrs"]


def _python(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run a benchmark script in a fresh interpreter; its last stdout line is JSON."""
    command = [sys.executable, str(HERE / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")], stdout=subprocess.PIPE, text=True
    )
    port = server.stdout.readline().strip() if server.stdout else ""
    if not port.isdigit():
        server.kill()
        raise RuntimeError("the benchmark server did not start")
    return server, f"http://127.0.0.1:{port}/v1"


def _summary(samples: list[float]) -> dict[str, Any]:
    median = statistics.median(samples)
    return {
        "median": round(median, 1),
        "min": round(min(samples), 1),
        "max": round(max(samples), 1),
        "spread_pct": round((max(samples) - min(samples)) / median * 100, 1) if median else 0.0,
        "samples": [round(sample, 1) for sample in samples],
    }


def _ratios(results: dict[str, dict[str, Any]], top: int) -> list[dict[str, Any]]:
    rows = []
    for name, numerator, denominator, target in RATIOS:
        for concurrency, by_client in sorted(results.items(), key=lambda item: int(item[0])):
            up, down = by_client[numerator], by_client[denominator]
            per_round = [a / b for a, b in zip(up["samples"], down["samples"], strict=True) if b]
            ratio = up["median"] / down["median"] if down["median"] else float("inf")
            applies = target is not None and int(concurrency) == top
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one benchmark run, as a JSON-ready dict."""
    concurrencies = [str(c) for c in args.concurrency]
    samples: dict[str, dict[str, list[float]]] = {
        c: {client: [] for client in CLIENT_ORDER} for c in concurrencies
    }
    server, url = _start_server()
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
        for round_index in range(args.rounds):
            shift = round_index % len(CLIENT_ORDER)
            order = CLIENT_ORDER[shift:] + CLIENT_ORDER[:shift]
            for concurrency in concurrencies:
                for client in order:
                    result = _python(
                        "clients.py",
                        client,
                        "--url",
                        url,
                        "-c",
                        concurrency,
                        "-d",
                        str(args.duration),
                        "-w",
                        str(args.warmup),
                        timeout=args.duration + 120,
                    )
                    samples[concurrency][client].append(result["rps"])
                    print(
                        f"round {round_index + 1}/{args.rounds} c={concurrency:>3} "
                        f"{client:<15} {result['rps']:8.0f} req/s",
                        flush=True,
                    )
        overhead = _python("overhead.py", timeout=300)
        memory = [
            _python(
                "memory.py",
                "--url",
                url,
                "--backend",
                "aiohttp",
                "--keys",
                str(args.memory_keys),
                timeout=600,
            ),
            _python(
                "memory.py",
                "--url",
                url,
                "--backend",
                "httpx",
                "--keys",
                str(max(args.memory_keys // 5, 1)),
                "--max-concurrency",
                "10",
                timeout=600,
            ),
        ]
    finally:
        server.terminate()
        server.wait(timeout=10)
    results = {
        c: {client: _summary(values) for client, values in by_client.items()}
        for c, by_client in samples.items()
    }
    fastest = max(results[top][client]["median"] for client in CLIENT_ORDER)
    capacity = max(load)  # what the server sustains; lower runs are load-generator noise
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "cpus": os.cpu_count(),
        },
        "packages": {name: _version(name) for name in PACKAGES},
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "job": "GET /v1/models (8 models), reply parsed into objects / JSON",
        },
        "server": {
            "load_rps": [round(value, 1) for value in load],
            "capacity_rps": round(capacity, 1),
            "fastest_client_rps": fastest,
            "headroom": round(capacity / fastest, 2),
            "ok": capacity >= 3 * fastest,
        },
        "results": results,
        "ratios": _ratios(results, int(top)),
        "overhead_us": overhead,
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
    concurrencies = sorted(report["results"], key=int)
    head = "| client | " + " | ".join(f"c={c} req/s (median) | c={c} spread" for c in concurrencies)
    settings, machine = report["settings"], report["machine"]
    intro = (
        f"Run {report['when']}: {settings['rounds']} rounds of {settings['duration_s']:g} s"
        " per client and concurrency, alternating; "
        f"Python {machine['python']}, {machine['cpus']} CPUs, {machine['system']}."
    )
    lines = [
        intro,
        "",
        head + " |",
        "|---|" + "---:|---:|" * len(concurrencies),
    ]
    for client in CLIENT_ORDER:
        cells = []
        for c in concurrencies:
            row = report["results"][c][client]
            spread = f"{row['min']:,.0f}-{row['max']:,.0f} (±{row['spread_pct'] / 2:.0f}%)"
            cells += [f"{row['median']:,.0f}", spread]
        lines.append(f"| {LABELS[client]} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio (of medians) | c | ratio | per-round range | target | met |"]
    lines.append("|---|---:|---:|---:|---:|:---:|")
    for row in report["ratios"]:
        target = f"≥ {row['target']:g}" if row["target"] is not None else ""
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(
            f"| {row['name']} | {row['concurrency']} | {row['ratio']:.2f}x | "
            f"{row['per_round_min']:.2f}-{row['per_round_max']:.2f} | {target} | {met} |"
        )
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
    for row in report["memory"]:
        lines.append(
            f"| {row['backend']} | {row['keys']:,} | {row['max_concurrency']} | "
            f"{row['connections_opened']} | {row['client_bytes_per_key']:,} | "
            f"{row['peak_bytes_per_key']:,} | {row['results_bytes_per_key']:,} | "
            f"{row['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    """Median req/s per client, one panel per concurrency, min-max as error bars."""
    import matplotlib as mpl  # noqa: PLC0415 - only the bench session installs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    concurrencies = sorted(report["results"], key=int)
    figure, _ = plt.subplots(1, len(concurrencies), figsize=(6 * len(concurrencies), 4.2))
    for axis, c in zip(list(figure.axes), concurrencies, strict=True):
        rows = [report["results"][c][client] for client in CLIENT_ORDER]
        medians = [row["median"] for row in rows]
        errors = [
            [row["median"] - row["min"] for row in rows],
            [row["max"] - row["median"] for row in rows],
        ]
        colors = ["#1f77b4", "#d62728", "#7f7f7f", "#bcbcbc", "#2ca02c", "#9467bd"]
        axis.bar(range(len(rows)), medians, yerr=errors, color=colors, capsize=4)
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels([SHORT[client] for client in CLIENT_ORDER], fontsize=8)
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
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--memory-keys", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--docs-chart", type=Path, default=ROOT / "docs" / "images" / "bench.png")
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
        args.docs_chart.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "bench.png", args.docs_chart)
    print(table)
    missed = [row for row in report["ratios"] if row["met"] is False]
    if missed or not report["server"]["ok"]:
        print("targets not met: " + ", ".join(row["name"] for row in missed), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
