"""``wh.images.generate``: the body as documented, images as bytes or URLs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from conftest import K1, over_http

from wishub_async import AsyncWishub
from wishub_async.exceptions import (
    BadRequestError,
    InvalidRequestError,
    NotFoundError,
    ResponseValidationError,
)
from wishub_async.models import Image, ImageList
from wishub_async.testing import FakeWishub
from wishub_async.testing._images import png

MODEL = "Qwen-Image"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake() -> FakeWishub:
    return FakeWishub({K1: [MODEL, "m-1"]})


@pytest.mark.anyio
async def test_b64_json_by_default_decoded_to_bytes(fake: FakeWishub, transport: str) -> None:
    async with over_http(fake, backend=transport) as wh:
        images = await wh.images.generate(model=MODEL, prompt="a red panda")
    [request] = fake.requests
    assert request.path == "/v1/images/generations"
    assert request.json == {"model": MODEL, "prompt": "a red panda"}  # nothing else sent
    assert isinstance(images, ImageList)
    assert images.created == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    [image] = images
    assert image.url is None
    assert image.b64_json is not None
    assert image.content is not None
    assert image.content.startswith(PNG_MAGIC)
    assert image.content == base64.b64decode(image.b64_json)
    assert image.content is image.content  # decoded once
    assert "b64_json" not in repr(image)  # a repr does not print megabytes


@pytest.mark.anyio
async def test_urls_on_request(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        images = await wh.images.generate(model=MODEL, prompt="p", response_format="url", n=2)
    assert len(images) == 2
    assert all(
        image.url and image.url.startswith("https://wishub.fake/images/") for image in images
    )
    assert [image.content for image in images] == [None, None]
    assert images.data[0].url != images.data[1].url


@pytest.mark.anyio
async def test_every_parameter_is_sent_as_written(fake: FakeWishub) -> None:
    fake.images.revised_prompt = "a red panda, snow"
    async with fake.client(app_key=K1) as wh:
        images = await wh.images.generate(
            model=MODEL,
            prompt="a red panda",
            size="768*1024",
            n=2,
            negative_prompt="blurry",
            response_format="b64_json",
            style="cartoon",
            num_inference_steps=30,
            user="u-1",
            seed=42,
            guidance=None,
            extra_body={"watermark": False},
        )
    assert fake.requests[0].json == {
        "model": MODEL,
        "prompt": "a red panda",
        "size": "768*1024",  # height x width, as the platform documents it
        "n": 2,
        "negative_prompt": "blurry",
        "response_format": "b64_json",
        "style": "cartoon",
        "num_inference_steps": 30,
        "user": "u-1",
        "seed": 42,
        "watermark": False,
    }
    assert [image.revised_prompt for image in images] == ["a red panda, snow"] * 2
    assert fake.images.generated == 2


@pytest.mark.anyio
async def test_errors_are_typed_and_bad_arguments_are_not_sent(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(NotFoundError):
            await wh.images.generate(model="nope", prompt="p")
        with pytest.raises(BadRequestError, match="1000"):
            await wh.images.generate(model=MODEL, prompt="p" * 1001)
        with pytest.raises(BadRequestError, match="n must"):
            await wh.images.generate(model=MODEL, prompt="p", n=9)
        sent = len(fake.requests)
        with pytest.raises(InvalidRequestError, match="prompt"):
            await wh.images.generate(model=MODEL, prompt=None)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="model"):
            await wh.images.generate(model="", prompt="p")
    assert len(fake.requests) == sent


def image_reply(*images: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"created": "1700000000", "data": list(images)})


@pytest.mark.asyncio
@respx.mock(base_url="https://wishub-x1.ctyun.cn/v1", assert_all_called=True)
async def test_base64_variants_are_read(respx_mock: respx.MockRouter) -> None:
    picture = png((1, 2, 3))
    plain = base64.b64encode(picture).decode()
    wrapped = "\n".join(plain[i : i + 20] for i in range(0, len(plain), 20))
    urlsafe = base64.urlsafe_b64encode(b"\xfb\xff" * 10).decode()
    respx_mock.post("/images/generations").mock(
        return_value=image_reply(
            {"b64_json": wrapped},
            {"b64_json": f"data:image/png;base64,{plain}"},
            {"b64_json": urlsafe, "revised_prompt": None, "url": None},
            {"url": "https://cdn.example/x.png", "extra": 1},
        )
    )
    async with AsyncWishub(app_key=K1) as wh:
        images = await wh.images.generate(model=MODEL, prompt="p")
    assert [image.content for image in images] == [picture, picture, b"\xfb\xff" * 10, None]
    assert images.created == datetime.fromtimestamp(1700000000, UTC)
    assert images.data[3] == Image(url="https://cdn.example/x.png")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"data": [{"b64_json": "not base64!"}]}, "$.data[0].b64_json"),
        ({"data": [{"url": "u"}, {"b64_json": "abc"}]}, "$.data[1].b64_json"),
        ({"data": [{"url": 5}]}, "$.data[0].url"),
        ({"data": {"url": "u"}}, "$.data"),
    ],
)
async def test_a_bad_image_is_a_validation_error(body: Any, path: str) -> None:
    with respx.mock(base_url="https://wishub-x1.ctyun.cn/v1") as mock:
        mock.post("/images/generations").mock(return_value=httpx.Response(200, json=body))
        async with AsyncWishub(app_key=K1) as wh:
            with pytest.raises(ResponseValidationError) as caught:
                await wh.images.generate(model=MODEL, prompt="p")
    assert caught.value.path == path


def test_the_fake_makes_valid_pngs() -> None:
    picture = png((10, 20, 30), side=2)
    assert picture.startswith(PNG_MAGIC)
    assert picture.endswith(b"IEND\xaeB`\x82")
