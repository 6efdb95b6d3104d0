"""Writing requests files and reading results files, for the batch tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


def request(
    custom_id: str, *, url: str = CHAT, model: str = "m-1", text: str | None = None
) -> dict[str, Any]:
    """One OpenAI Batch line; the request's text is its custom_id unless given."""
    text = custom_id if text is None else text
    if url == EMBEDDINGS:
        body: dict[str, Any] = {"model": model, "input": text}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def write_requests(path: Path, lines: Iterable[dict[str, Any] | str | bytes]) -> Path:
    """A requests file: dicts as JSON lines, str and bytes as they are (plus a newline)."""
    with path.open("wb") as file:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)  # noqa: PLW2901 - encoded below
            file.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def results(*paths: Path) -> list[dict[str, Any]]:
    """Every line of the results files (which must all be whole JSON lines)."""
    lines: list[dict[str, Any]] = []
    for path in paths:
        if not path.exists():
            continue
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
        lines += [json.loads(line) for line in data.splitlines()]
    return lines


def finished_ids(*paths: Path) -> list[str]:
    """The custom_ids of the results files, in file order (repeats kept)."""
    return [line["custom_id"] for line in results(*paths)]
