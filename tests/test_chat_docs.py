"""Run every ```python block of the chat and embeddings pages against FakeWishub."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import wishub_async
from wishub_async.testing import FakeWishub

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = ["chat.md", "embeddings.md"]


def blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("page", "index"), [(page, index) for page in PAGES for index in range(len(blocks(page)))]
)
def test_docs_example_runs(
    page: str, index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeWishub()
    fake.chat.reasoning = "Thinking."

    def client(*_: Any, **options: Any) -> wishub_async.AsyncWishub:
        return fake.client(**options)

    monkeypatch.setenv("WISHUB_APP_KEY", "k" * 32)
    monkeypatch.setattr(wishub_async, "AsyncWishub", client)
    code = blocks(page)[index]
    exec(compile(code, f"{page}[{index}]", "exec"), {"__name__": "__docs__"})  # noqa: S102
    assert capsys.readouterr().out or "def " in code
    assert fake.chat.open_streams == 0


def test_every_page_has_examples() -> None:
    assert all(blocks(page) for page in PAGES)
