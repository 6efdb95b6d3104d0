"""Developer tasks. ``nox -s bench`` runs the benchmark; it is not in the default set."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark against the peers on a loopback server; writes benchmarks/results/."""
    session.install("-e", ".[aiohttp]", "openai", "matplotlib", "uvloop")
    session.run("python", "benchmarks/bench.py", *session.posargs)
