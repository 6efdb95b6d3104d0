"""How the fake checks chat content parts, as a vision model's server would."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["content_problem", "count_images"]

_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL)


def content_problem(messages: list[Any], *, text_only: bool) -> str | None:
    """What is wrong with the messages' content parts, or None when they are fine.

    Parts are ``text`` (with a string) or ``image_url`` (an http(s) URL, or a
    ``data:image/...;base64,`` URL holding valid base64). A ``text_only`` model takes
    string content only.
    """
    for number, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        if text_only:
            return f"messages[{number}].content must be a string for this model"
        for part in content:
            problem = _part_problem(part)
            if problem is not None:
                return f"messages[{number}].content: {problem}"
    return None


def _part_problem(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return None if isinstance(part.get("text"), str) else "a text part needs a string text"
    if kind != "image_url":
        return f"unsupported content part {kind!r}"
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        return "an image_url part needs image_url.url"
    return None if url.startswith(("http://", "https://")) else _data_url_problem(url)


def _data_url_problem(url: str) -> str | None:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return "image_url.url must be an http(s) URL or a data:image/...;base64, URL"
    try:
        base64.b64decode(match["data"], validate=True)
    except binascii.Error:
        return "the data URL does not hold valid base64"
    return None


def count_images(messages: list[Any]) -> int:
    """How many image parts the messages hold."""
    return sum(
        1
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
