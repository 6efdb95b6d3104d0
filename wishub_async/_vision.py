"""Chat content parts for vision models: text, and images from bytes, files or URLs.

A message's ``content`` is a string, or (for vision models) a list of parts::

    {"role": "user", "content": [text_part("What is this?"), image_part("cat.png")]}

Local images (bytes or a file) travel inline as a ``data:`` URL with their MIME type;
URLs are sent as they are. The parts are plain dicts (typed as ``TypedDict``), sent
intact.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Required, TypedDict

from .exceptions import InvalidRequestError

__all__ = [
    "ContentPart",
    "ImagePart",
    "ImageURL",
    "TextPart",
    "UserMessage",
    "image_data_url",
    "image_part",
    "message_bodies",
    "sniff_image_type",
    "text_part",
    "user_message",
]

_URL_SCHEMES = ("http://", "https://", "data:")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class TextPart(TypedDict):
    """A text part: ``{"type": "text", "text": ...}``."""

    type: Literal["text"]
    text: str


class ImageURL(TypedDict, total=False):
    """Where an image part's image is: a URL, or a ``data:`` URL holding the image."""

    url: Required[str]
    detail: Literal["auto", "low", "high"]


class ImagePart(TypedDict):
    """An image part: ``{"type": "image_url", "image_url": {"url": ...}}``."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart
"""One part of a message's content."""


class UserMessage(TypedDict):
    """A user message whose content is a list of parts."""

    role: Literal["user"]
    content: list[ContentPart]


def text_part(text: str) -> TextPart:
    """A text part.

    Raises:
        InvalidRequestError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidRequestError(f"a text part takes a str, not {type(text).__name__}")
    return {"type": "text", "text": text}


def image_part(
    image: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    mime_type: str | None = None,
    detail: Literal["auto", "low", "high"] | None = None,
) -> ImagePart:
    """An image part, from a URL, a file or the image's bytes.

    Args:
        image: a URL (``http://``, ``https://`` or ``data:``), sent as it is; a file
            path (a ``str`` that is not such a URL, or a ``pathlib.Path``), read now;
            or the image's bytes. Files and bytes become a ``data:`` URL.
        mime_type: the image's MIME type, such as ``image/png``; by default it is
            read from the image's first bytes (PNG, JPEG, GIF, WebP, BMP, TIFF), else
            guessed from the file name.
        detail: the ``detail`` hint OpenAI-style vision models take, if any.

    Raises:
        InvalidRequestError: the file cannot be read, or its type cannot be told.
    """
    if isinstance(image, str) and image.startswith(_URL_SCHEMES):
        url = image
    elif isinstance(image, bytes | bytearray | memoryview):
        url = image_data_url(image, mime_type)
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read image file {str(path)!r}: {exc.strerror or exc}"
                " (an image URL starts with http://, https:// or data:)"
            ) from exc
        url = image_data_url(data, mime_type or _type_of_name(path.name, data))
    else:
        raise InvalidRequestError(
            f"an image is a URL, a file path or bytes, not {type(image).__name__}"
        )
    image_url: ImageURL = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def image_data_url(data: bytes | bytearray | memoryview, mime_type: str | None = None) -> str:
    """``data:<type>;base64,...`` for an image's bytes (type read from them if not given).

    Raises:
        InvalidRequestError: the bytes are empty, or their type cannot be told.
    """
    data = bytes(data)
    if not data:
        raise InvalidRequestError("the image is empty (0 bytes)")
    kind = mime_type or sniff_image_type(data)
    if kind is None:
        raise InvalidRequestError(
            "cannot tell the image's type from its bytes; pass mime_type='image/...'"
        )
    if not kind.startswith("image/") or any(char in kind for char in ";, "):
        raise InvalidRequestError(
            f"mime_type must be an image type such as image/png, not {kind!r}"
        )
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type an image's first bytes announce, or None when they are not known."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def _type_of_name(name: str, data: bytes) -> str | None:
    """The type of a file's image: from its bytes, else from its name (if an image's)."""
    sniffed = sniff_image_type(data)
    if sniffed is not None:
        return sniffed
    guessed, _ = mimetypes.guess_type(name)
    return guessed if guessed is not None and guessed.startswith("image/") else None


def user_message(*content: str | ContentPart) -> UserMessage:
    """A user message from text and parts; strings become text parts.

    ::

        user_message("What is in this picture?", image_part("cat.png"))
    """
    parts: list[ContentPart] = [
        text_part(item) if isinstance(item, str) else item for item in content
    ]
    return {"role": "user", "content": parts}


def message_bodies(
    messages: Sequence[Mapping[str, Any]], *, flatten: bool = False
) -> list[dict[str, Any]]:
    """The messages as JSON-ready dicts; with ``flatten``, text-only part lists joined.

    A ``content`` list made only of text parts becomes one string, the texts joined by
    newlines, for models that take only string content. Lists with any other part
    (an image) are sent intact.
    """
    bodies = [dict(message) for message in messages]
    if flatten:
        for body in bodies:
            text = _joined_text(body.get("content"))
            if text is not None:
                body["content"] = text
    return bodies


def _joined_text(content: object) -> str | None:
    """The texts of a list of text parts joined by newlines; None for anything else."""
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "\n".join(texts)
