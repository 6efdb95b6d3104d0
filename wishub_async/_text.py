"""Small text helpers for messages."""

from __future__ import annotations

__all__ = ["excerpt"]

_EXCERPT_CHARS = 200


def excerpt(content: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """A short one-line excerpt of a body, for messages."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
