"""Checked by mypy, not run: rerank, images, vision parts and hosts as a user types them."""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

from wishub_async import (
    DEFAULT_RERANK_ROUTES,
    HOSTS,
    AsyncWishub,
    ImagePart,
    RerankRoute,
    RerankRoutes,
    TextPart,
    UserMessage,
    image_part,
    text_part,
    user_message,
)
from wishub_async.models import Image, ImageList, RerankItem, RerankResult


async def check() -> None:
    routes = DEFAULT_RERANK_ROUTES.with_routes(
        {"my-reranker": RerankRoute("/v1/x", style="dashscope", at_root=True)}
    )
    assert_type(routes, RerankRoutes)
    async with AsyncWishub(host="x6", rerank_routes=routes, flatten_text_parts=True) as wh:
        ranked = await wh.rerank.create(model="gte-rerank-v2", query="q", documents=["a"])
        assert_type(ranked, RerankResult)
        for item in ranked:
            assert_type(item, RerankItem)
            assert_type(item.document, str | None)
            assert_type(item.relevance_score, float)
        images = await wh.images.generate(model="Qwen-Image", prompt="p", size="1024*1024")
        assert_type(images, ImageList)
        for image in images:
            assert_type(image, Image)
            assert_type(image.content, bytes | None)
        assert_type(text_part("a"), TextPart)
        assert_type(image_part(Path("cat.png")), ImagePart)
        message = user_message("What is this?", image_part(b"..."))
        assert_type(message, UserMessage)
        await wh.chat.completions.create(model="GLM4.6V", messages=[message])
        wh.with_options(host="gateway")
        assert_type(HOSTS["x6"], str)
        AsyncWishub(host="x7")  # type: ignore[arg-type]
        await wh.images.generate(model="m", prompt="p", response_format="png")  # type: ignore[arg-type]
