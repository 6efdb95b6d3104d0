"""Vision input: content parts built by the helpers, sent intact; text-only flattening."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from conftest import K1, over_http

from wishub_async import (
    AsyncWishub,
    image_data_url,
    image_part,
    text_part,
    user_message,
)
from wishub_async._vision import message_bodies, sniff_image_type
from wishub_async.exceptions import BadRequestError, ConfigurationError, InvalidRequestError
from wishub_async.testing import FakeWishub
from wishub_async.testing._images import png

VL = "GLM4.6V"
TEXT = "DeepSeek-V4-Flash"
PICTURE = png((200, 10, 10))
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\x00" * 10


@pytest.fixture
def fake() -> FakeWishub:
    fake = FakeWishub({K1: [VL, TEXT]})
    fake.chat.text_only = {TEXT}
    return fake


def data_of(url: str) -> bytes:
    head, _, data = url.partition(",")
    assert head.endswith(";base64")
    return base64.b64decode(data)


# -- the helpers ---------------------------------------------------------------------


def test_a_text_part() -> None:
    assert text_part("hi") == {"type": "text", "text": "hi"}
    with pytest.raises(InvalidRequestError):
        text_part(b"hi")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["https://example.com/cat.png", "http://127.0.0.1/cat.jpg", "data:image/png;base64,AAAA"],
)
def test_urls_are_sent_as_they_are(url: str) -> None:
    assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}
    assert image_part(url, detail="low")["image_url"] == {"url": url, "detail": "low"}


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PICTURE, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"),
        (b"GIF89a" + b"\x00" * 8, "image/gif"),
        (b"GIF87a" + b"\x00" * 8, "image/gif"),
        (WEBP, "image/webp"),
        (b"BM" + b"\x00" * 8, "image/bmp"),
        (b"II*\x00" + b"\x00" * 8, "image/tiff"),
    ],
)
def test_bytes_become_a_data_url_of_their_type(data: bytes, kind: str) -> None:
    url = image_part(data)["image_url"]["url"]
    assert url.startswith(f"data:{kind};base64,")
    assert data_of(url) == data
    assert image_data_url(bytearray(data)) == url
    assert image_part(memoryview(data))["image_url"]["url"] == url
    assert sniff_image_type(data) == kind


def test_files_by_path_or_str(tmp_path: Path) -> None:
    named = tmp_path / "photo.png"
    named.write_bytes(PICTURE)
    odd = tmp_path / "scan.jpg"
    odd.write_bytes(b"raw bytes no magic")  # the type comes from the name then
    assert image_part(named) == image_part(str(named)) == image_part(PICTURE)
    assert image_part(odd)["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert image_part(odd, mime_type="image/heic")["image_url"]["url"].startswith(
        "data:image/heic;base64,"
    )


def test_what_cannot_be_an_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="pass mime_type"):
        image_part(b"plain text")
    with pytest.raises(InvalidRequestError, match="empty"):
        image_part(b"")
    with pytest.raises(InvalidRequestError, match="image type"):
        image_part(PICTURE, mime_type="text/plain")
    with pytest.raises(InvalidRequestError, match="image type"):
        image_part(PICTURE, mime_type="image/png;charset=x")
    with pytest.raises(InvalidRequestError, match=r"cannot read .*https://"):
        image_part("htps://example.com/typo.png")
    with pytest.raises(InvalidRequestError, match="cannot read"):
        image_part(tmp_path)  # a directory
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"hello")
    with pytest.raises(InvalidRequestError, match="pass mime_type"):
        image_part(notes)
    with pytest.raises(InvalidRequestError, match="not int"):
        image_part(42)  # type: ignore[arg-type]


def test_a_user_message_from_text_and_parts() -> None:
    part = image_part("https://example.com/a.png")
    assert user_message("What is this?", part) == {
        "role": "user",
        "content": [{"type": "text", "text": "What is this?"}, part],
    }


def test_flattening_joins_text_only_lists_and_leaves_the_rest() -> None:
    image = image_part("https://example.com/a.png")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "plain"},
        {"role": "user", "content": [text_part("one"), text_part("two")]},
        {"role": "user", "content": [text_part("look"), image]},
        {"role": "user", "content": []},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": 5}]},
        {"role": "user", "content": ["not a part"]},
    ]
    flat = message_bodies(messages, flatten=True)
    assert [message["content"] for message in flat] == [
        "plain",
        "one\ntwo",
        [text_part("look"), image],
        [],
        None,
        [{"type": "text", "text": 5}],
        ["not a part"],
    ]
    assert message_bodies(messages) == messages
    assert messages[1]["content"] == [text_part("one"), text_part("two")]  # not changed


# -- sent to a vision model ------------------------------------------------------------


@pytest.mark.anyio
async def test_parts_are_sent_intact(fake: FakeWishub, transport: str, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PICTURE)
    message = user_message("What is this?", image_part(path), image_part("https://x.test/b.jpg"))
    async with over_http(fake, backend=transport) as wh:
        answer = await wh.chat.completions.create(model=VL, messages=[message])
    assert answer.text == "You said: What is this? [2 images]"
    assert fake.chat.images == 2
    sent = fake.requests[0].json["messages"][0]
    assert sent == message
    assert data_of(sent["content"][1]["image_url"]["url"]) == PICTURE


@pytest.mark.anyio
async def test_the_fake_refuses_broken_parts(fake: FakeWishub) -> None:
    broken = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
        {"type": "image_url", "image_url": "https://x/y.png"},
        {"type": "input_audio", "input_audio": {}},
        {"type": "text", "text": None},
    ]
    async with fake.client(app_key=K1) as wh:
        for part in broken:
            with pytest.raises(BadRequestError):
                await wh.chat.completions.create(
                    model=VL, messages=[{"role": "user", "content": [part]}]
                )
    assert fake.chat.images == 0


@pytest.mark.anyio
async def test_flatten_text_parts_for_string_only_models(fake: FakeWishub, transport: str) -> None:
    messages = [
        {"role": "system", "content": [text_part("Be brief.")]},
        user_message("Hello", "there"),
    ]
    async with over_http(fake, backend=transport) as wh:
        with pytest.raises(BadRequestError, match="must be a string"):
            await wh.chat.completions.create(model=TEXT, messages=messages)
        flat = wh.with_options(flatten_text_parts=True)
        answer = await flat.chat.completions.create(model=TEXT, messages=messages)
        stream = await flat.chat.completions.create(model=TEXT, messages=messages, stream=True)
        async with stream:
            streamed = await stream.collect()
    assert answer.text == streamed.text == "You said: Hello\nthere"
    for request in fake.requests[1:]:
        assert request.json["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello\nthere"},
        ]
        assert "flatten_text_parts" not in request.json  # an option of ours, never sent
    assert messages[1]["content"] == [text_part("Hello"), text_part("there")]


@pytest.mark.anyio
async def test_flattening_keeps_images(fake: FakeWishub) -> None:
    message = user_message("Look", image_part(PICTURE))
    async with fake.client(app_key=K1, flatten_text_parts=True) as wh:
        await wh.chat.completions.create(model=VL, messages=[message])
        plain = wh.with_options(flatten_text_parts=False)
        await plain.chat.completions.create(model=VL, messages=[user_message("a", "b")])
    assert fake.requests[0].json["messages"] == [message]
    assert fake.requests[1].json["messages"][0]["content"] == [text_part("a"), text_part("b")]


def test_the_option_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="flatten_text_parts"):
        AsyncWishub(app_key=K1, flatten_text_parts="yes")  # type: ignore[arg-type]
