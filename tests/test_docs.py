"""Every ```python block in README.md and docs/ runs, against a fake on loopback.

Blocks of one page share a namespace, in order. The environment points the SDK at
the fake: WISHUB_APP_KEY is a key the fake knows, WISHUB_BASE_URL its loopback URL.
A page that reads REDIS_URL gets a Valkey server of its own there.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest
from valkey_process import ValkeyProcess

from wishub_async import DEFAULT_ERROR_TABLE
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
DOCS_KEY = "d0c5d0c5d0c5d0c5d0c5d0c5d0c5d0c5"
SURFACE_MODELS = (
    "BGE-Reranker-V2-m3",
    "qwen3-rerank",
    "gte-rerank-v2",
    "Qwen-Image",
    "GLM4.6V",
    "BGE-m3",
)
"""Models the rerank, images, vision and limits pages call by name, as on the x6 host."""


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Examples may configure logging (the observability page does): undo it after."""
    ours = logging.getLogger("wishub_async")
    level, root_handlers, root_level = ours.level, logging.root.handlers[:], logging.root.level
    try:
        yield
    finally:
        ours.setLevel(level)
        for handler in logging.root.handlers[:]:
            if handler not in root_handlers:
                logging.root.removeHandler(handler)
        logging.root.setLevel(root_level)


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch, restored_logging: None) -> Iterator[FakeWishub]:
    fake = FakeWishub({DOCS_KEY: [*DEFAULT_MODELS, *SURFACE_MODELS]})
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        monkeypatch.setenv("WISHUB_APP_KEY", DOCS_KEY)
        monkeypatch.setenv("WISHUB_BASE_URL", base_url)
        yield fake


def test_the_readme_has_examples() -> None:
    assert len(blocks(ROOT / "README.md")) >= 3


@pytest.mark.parametrize(
    "page", [page for page in PAGES if blocks(page)], ids=lambda page: page.name
)
def test_examples_run(
    page: Path,
    platform: FakeWishub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    with contextlib.ExitStack() as stack:
        if "REDIS_URL" in page.read_text(encoding="utf-8"):
            monkeypatch.setenv("REDIS_URL", stack.enter_context(ValkeyProcess()).url)
        for number, code in enumerate(blocks(page), 1):
            compiled = compile(code, f"{page.name}[block {number}]", "exec")
            exec(compiled, namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert DOCS_KEY not in out
    assert platform.requests or "FakeWishub" in page.read_text(encoding="utf-8")


def test_the_errors_page_covers_every_row_of_the_default_table() -> None:
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for error_type, rule in DEFAULT_ERROR_TABLE.types.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{error_type}` |"))
        assert f"`{rule.exception.__name__}`" in row, error_type
    for piece, rule in DEFAULT_ERROR_TABLE.messages.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{piece}` |"))
        assert f"`{rule.exception.__name__}`" in row, piece
        assert rule.key_effect.value.replace("_", " ") in row, piece
    for status, rule in DEFAULT_ERROR_TABLE.statuses.items():
        row = next(
            line
            for line in page.splitlines()
            if line.startswith("| ") and str(status) in line.split("|")[1]
        )
        assert f"`{rule.exception.__name__}`" in row, status


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert {name for name in pages if f" {name}" not in nav} == set()
