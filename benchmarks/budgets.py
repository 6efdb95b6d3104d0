"""Rate budgets: a large fan-out against per-key limits, four clients side by side.

1. Starts ``limit_server.py`` in its own process: an embeddings route that limits
   each key and model to ``--requests`` calls per ``--per`` seconds and answers 429
   with a Retry-After past it, in each window style (sliding, fixed, token bucket).
2. For each style, runs the same fan-out (``--windows`` windows of the aggregate
   limit, ``--keys`` keys) through each client of ``budget_clients.py``, each in a
   fresh process, after resetting the server's counts: this SDK with the limit
   configured, this SDK adapting, the OpenAI SDK with its default retries, and a
   pause-everything-on-429 processor in the style of the OpenAI cookbook's script.
3. Measures the memory of budgets for 10,000 keys x 5 models (``budget_memory.py``).
4. Prints one table and writes ``--out`` (JSON, the adaptive rates' traces and the
   server's per-bin counts included).

Per row: goodput, the calls that succeeded per second as a fraction of the aggregate
limit (keys x requests / per); the same past the first window (every style lets a
fresh key send a whole window at once, worth 1/windows of the run); the share of the
requests that arrived which the server rejected; and the wall time against the ideal
(the calls over the aggregate limit).

    python benchmarks/budgets.py --keys 20 --requests 10 --per 2 --windows 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
STYLES = ("sliding", "fixed", "bucket")
CLIENTS = ("wishub-limits", "wishub-adaptive", "openai", "pause-all")
LABELS = {
    "wishub-limits": "wishub_async, limits=RateLimit(...)",
    "wishub-adaptive": "wishub_async, adaptive (no limits=)",
    "openai": "OpenAI SDK, default retries",
    "pause-all": "pause all on 429 (cookbook style)",
}
TARGETS = {"wishub-limits": (0.95, 0.005), "wishub-adaptive": (0.75, 0.05)}
"""Client -> (least goodput, most rejected share), from the issue."""
PACKAGES = ["wishub-async", "openai", "aiohttp", "httpx", "anyio"]


def _last_json_line(command: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _control(root: str, route: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``payload`` (or GET) a control route of the loopback server."""
    if not root.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark talks to its loopback server only")
    data = None if payload is None else json.dumps(payload).encode()
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(root + route, data=data, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback only
        answer: dict[str, Any] = json.loads(reply.read())
        return answer


def _row(args: argparse.Namespace, url: str, style: str, client: str) -> dict[str, Any]:
    """One client's fan-out under one window style, with the server's counts."""
    root = url.removesuffix("/v1")
    _control(root, "/bench/reset", {"style": style, "requests": args.requests, "per": args.per})
    aggregate = args.keys * args.requests / args.per
    calls = args.windows * args.keys * args.requests
    ideal = calls / aggregate
    command = [
        sys.executable,
        str(HERE / "budget_clients.py"),
        client,
        f"--url={url}",
        f"--keys={args.keys}",
        f"--requests={args.requests}",
        f"--per={args.per}",
        f"--calls={calls}",
        f"--concurrency={args.concurrency}",
        f"--pause={args.per * args.pause:g}",
    ]
    measured = _last_json_line(command, timeout=max(120.0, 10 * ideal))
    server = _control(root, "/bench/stats")
    wall, ok = measured["wall_s"], measured["ok"]
    arrived = server["accepted"] + server["rejected"]
    row: dict[str, Any] = {
        "style": style,
        "client": client,
        "label": LABELS[client],
        "calls": calls,
        **measured,
        "server": server,
        "ideal_s": ideal,
        "x_ideal": wall / ideal,
        "goodput": ok / wall / aggregate,
        "goodput_past_first_window": max(ok - args.keys * args.requests, 0) / wall / aggregate,
        "rejected_share": server["rejected"] / arrived if arrived else 0.0,
    }
    if client in TARGETS:
        least, most = TARGETS[client]
        row["target"] = f">= {least:.0%}, <= {most:.1%} rejected"
        row["met"] = row["goodput"] >= least and row["rejected_share"] <= most
    return row


def _memory(args: argparse.Namespace) -> dict[str, Any]:
    """Bytes per budget: the states for 10,000 x 5, and the request path as a check."""
    script = str(HERE / "budget_memory.py")
    states = _last_json_line(
        [sys.executable, script, "states", f"--keys={args.memory_keys}", "--models=5"],
        timeout=600,
    )
    path = {
        variant: _last_json_line(
            [sys.executable, script, "path", f"--variant={variant}", f"--keys={args.path_keys}"],
            timeout=1800,
        )
        for variant in ("none", "window", "adaptive")
    }
    budgets = args.path_keys * 5
    control = path["none"]["after_calls_bytes"]
    return {
        "states": states,
        "path": path,
        "path_window_bytes_per_budget": (path["window"]["after_calls_bytes"] - control) / budgets,
        "path_adaptive_bytes_per_budget": (path["adaptive"]["after_calls_bytes"] - control)
        / budgets,
    }


def _machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": os.getloadavg(),
        "packages": versions,
    }


def _table(result: dict[str, Any]) -> str:
    """The rows as one markdown table, then the memory figures."""
    setup = result["setup"]
    heading = (
        f"{setup['keys']} keys x {setup['requests']} requests per {setup['per']:g} s per key"
        f" ({setup['aggregate']:g} calls/s in all), {setup['calls']:,} calls"
        f" ({setup['windows']} windows), at most {setup['concurrency']} in flight,"
        f" {setup['latency'] * 1000:g} ms per accepted call; ideal {setup['ideal_s']:.1f} s."
    )
    columns = "window client ok goodput past-1st-window rejected wall x-ideal target met"
    lines = [
        heading,
        "",
        "| " + " | ".join(name.replace("-", " ") for name in columns.split()) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for row in result["rows"]:
        met = "" if "met" not in row else ("yes" if row["met"] else "**no**")
        failed = row["calls"] - row["ok"]
        done = f"{row['ok']:,}" + (f" ({failed:,} failed)" if failed else "")
        lines.append(
            f"| {row['style']} | {row['label']} | {done} | {row['goodput']:.1%}"
            f" | {row['goodput_past_first_window']:.1%} | {row['rejected_share']:.2%}"
            f" ({row['server']['rejected']:,}) | {row['wall_s']:.1f} s | {row['x_ideal']:.2f}"
            f" | {row.get('target', '')} | {met} |"
        )
    memory = result.get("memory")
    if memory:
        states = memory["states"]
        summary = (
            f"Budget memory, {states['keys']:,} keys x {states['models']} models after one"
            f" call each: {states['window_bytes_per_budget']:,.0f} B per key and model"
            f" with limits=, {states['adaptive_bytes_per_budget']:,.0f} B adaptive; a"
            f" configured window adds {states['window_bytes_per_counted_call']:,.0f} B per"
            " call it still counts. Through the request path"
            f" ({memory['path']['none']['keys']:,} keys x 5 models):"
            f" {memory['path_window_bytes_per_budget']:,.0f} B and"
            f" {memory['path_adaptive_bytes_per_budget']:,.0f} B."
        )
        lines += ["", summary]
    return "\n".join(lines)


def _server(latency: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "limit_server.py"), f"--latency={latency}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip() if server.stdout else ""
    if not url.startswith("http://127.0.0.1:"):
        server.terminate()
        raise RuntimeError("the limit server did not start")
    return server, url


def main(argv: list[str] | None = None) -> None:
    """Run every style and client, then the memory; print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per key and window")
    parser.add_argument("--per", type=float, default=2.0, help="the window, in seconds")
    parser.add_argument("--windows", type=int, default=10, help="the fan-out, in windows")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05, help="s per accepted call")
    parser.add_argument(
        "--pause", type=float, default=0.25, help="pause-all's pause, in windows (15 s of 60)"
    )
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--memory-keys", type=int, default=10_000)
    parser.add_argument("--path-keys", type=int, default=1_000)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "budgets.json")
    parser.add_argument("--show", type=Path, help="only print the table of this result file")
    args = parser.parse_args(argv)
    if args.show:
        print(_table(json.loads(args.show.read_text(encoding="utf-8"))))
        return
    styles, clients = args.styles.split(","), args.clients.split(",")
    aggregate = args.keys * args.requests / args.per
    calls = args.windows * args.keys * args.requests
    result: dict[str, Any] = {
        "run": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "setup": {
            **{name: getattr(args, name) for name in ("keys", "requests", "per", "windows")},
            **{name: getattr(args, name) for name in ("concurrency", "latency")},
            "pause_s": args.per * args.pause,
            "aggregate": aggregate,
            "calls": calls,
            "ideal_s": calls / aggregate,
        },
        "rows": [],
    }
    server, url = _server(args.latency)
    try:
        for turn, style in enumerate(styles):
            order = clients[turn % len(clients) :] + clients[: turn % len(clients)]
            rows = {}
            for client in order:  # rotated per style, so drift spreads over the clients
                started = time.perf_counter()
                rows[client] = _row(args, url, style, client)
                print(f"  {style} {client}: {time.perf_counter() - started:.0f} s", flush=True)
            result["rows"] += [rows[client] for client in clients]
    finally:
        server.terminate()
        server.wait(timeout=30)
    if not args.no_memory:
        result["memory"] = _memory(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(_table(result))


if __name__ == "__main__":
    main(sys.argv[1:])
