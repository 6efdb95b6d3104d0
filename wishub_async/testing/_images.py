"""The fake's image endpoint: small, valid PNGs whose colour comes from the prompt."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import TYPE_CHECKING, Any

import attrs

from ._chat import CREATED
from ._replies import error_reply, json_reply

if TYPE_CHECKING:
    from ._fake import FakeWishub
    from ._replies import Reply

__all__ = ["FakeImages", "images_route", "png"]

MAX_PROMPT = 1000
"""The longest prompt the platform documents, in characters."""


@attrs.define
class FakeImages:
    """How ``POST /images/generations`` answers (``fake.images``); change it freely.

    Attributes:
        url_base: where ``response_format="url"`` images are said to be.
        revised_prompt: sent with every image when set.
        side: the width and height of the PNGs, in pixels.
        generated: images made in all.
        requests: the bodies of the image requests answered.
    """

    url_base: str = "https://wishub.fake/images"
    revised_prompt: str | None = None
    side: int = 8
    generated: int = 0
    requests: list[Any] = attrs.field(factory=list)


def png(colour: tuple[int, int, int], side: int = 8) -> bytes:
    """A valid ``side`` x ``side`` PNG of one colour."""
    row = b"\x00" + bytes(colour) * side
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * side))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


async def images_route(fake: FakeWishub, key: str, payload: Any) -> Reply:
    """``POST /images/generations``: ``n`` PNGs as ``b64_json`` (or URLs on request)."""
    body = payload if isinstance(payload, dict) else {}
    model, prompt = body.get("model"), body.get("prompt")
    if model not in fake.models_of(key):
        return error_reply(type="model_not_found", message=f"model {model!r} not found")
    count = body.get("n", 1)
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT:
        message = f"prompt must be a non-empty string of at most {MAX_PROMPT} characters"
        return error_reply(type="invalid_request_error", message=message)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 4:  # noqa: PLR2004
        return error_reply(type="invalid_request_error", message="n must be 1 to 4")
    if body.get("response_format", "b64_json") not in {"b64_json", "url"}:
        return error_reply(type="invalid_request_error", message="unknown response_format")
    behaviour: FakeImages = fake.images
    behaviour.requests.append(payload)
    data = []
    for index in range(count):
        behaviour.generated += 1
        seed = hashlib.sha256(f"{prompt}\n{index}".encode()).digest()
        image: dict[str, Any] = {}
        if body.get("response_format") == "url":
            image["url"] = f"{behaviour.url_base}/{seed.hex()[:16]}.png"
        else:
            picture = png((seed[0], seed[1], seed[2]), behaviour.side)
            image["b64_json"] = base64.b64encode(picture).decode()
        if behaviour.revised_prompt is not None:
            image["revised_prompt"] = behaviour.revised_prompt
        data.append(image)
    return json_reply({"created": CREATED, "data": data})
