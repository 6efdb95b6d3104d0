"""Rerank, images, vision and the quota 429 against a plain aiohttp server.

The server here is written from ``wishub-api.md`` alone, independently of
``FakeWishub``: it checks the path and body of each call and answers in the shapes
the platform (and the services behind it) use. Both transports run against it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from wishub_async import AsyncWishub, KeyState, RetryPolicy, image_part, user_message
from wishub_async.exceptions import QuotaExceededError

KEY = "5e7f00d1c0ffee00aa11bb22cc33dd44"
DASHSCOPE = "/api/v1/services/rerank/text-rerank/text-rerank"
QUOTA_MESSAGE = "免费额度已结束，请开通付费"  # noqa: RUF001 - the platform's own text
DOCS = ["alpha", "beta", "gamma"]
SCORES = [0.2, 0.9, 0.5]
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


class Platform:
    """A loopback stand-in for the platform; records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []  # (path, authorization, JSON body)
        self.spent: dict[str, Literal["nested", "flat"]] = {}  # model -> quota envelope
        self.app = web.Application()
        self.app.router.add_post("/v1/rerank", self.openai_rerank)
        self.app.router.add_post("/v1/reranks", self.jina_rerank)
        self.app.router.add_post(DASHSCOPE, self.dashscope_rerank)
        self.app.router.add_post("/v1/images/generations", self.images)
        self.app.router.add_post("/v1/chat/completions", self.chat)

    async def _read(self, request: web.Request) -> tuple[Any, web.Response | None]:
        assert request.content_type == "application/json"
        body = await request.json()
        self.seen.append((request.path, request.headers["Authorization"], body))
        envelope = self.spent.get(body.get("model"))
        if envelope is None:
            return body, None
        inner = {"code": "429001", "type": "FREE_QUOTA_EXHAUSTED", "message": QUOTA_MESSAGE}
        error: dict[str, Any] = {"error": inner}
        if envelope == "flat":
            error = {"code": 429001, "detail": QUOTA_MESSAGE, "message": "FREE_QUOTA_EXHAUSTED"}
            error["error"] = inner
        return body, web.json_response(error, status=429)

    async def openai_rerank(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        results = [  # input order, documents as plain strings
            {"index": index, "relevance_score": score, "document": body["documents"][index]}
            for index, score in enumerate(SCORES)
        ]
        return web.json_response({"model": body["model"], "results": results})

    async def jina_rerank(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        ranked = sorted(range(len(SCORES)), key=lambda index: -SCORES[index])[: body["top_n"]]
        results = [
            {"index": i, "relevance_score": SCORES[i], "document": {"text": body["documents"][i]}}
            for i in ranked
        ]
        return web.json_response({"id": "jina-1", "results": results, "usage": {"total_tokens": 6}})

    async def dashscope_rerank(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        documents = body["input"]["documents"]
        results = [
            {"index": index, "relevance_score": score, "document": {"text": documents[index]}}
            for index, score in sorted(enumerate(SCORES), key=lambda pair: -pair[1])
        ]
        return web.json_response(
            {"output": {"results": results}, "usage": {"total_tokens": 9}, "request_id": "ds-1"}
        )

    async def images(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        if body.get("response_format") == "url":
            data = [{"url": f"https://img.example/{n}.png"} for n in range(body.get("n", 1))]
        else:
            data = [{"b64_json": base64.b64encode(PIXEL).decode(), "revised_prompt": "a cat"}]
        return web.json_response({"created": 1_700_000_000, "data": data})

    async def chat(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        content = body["messages"][-1]["content"]
        kinds = content if isinstance(content, str) else ",".join(p["type"] for p in content)
        message = {"role": "assistant", "content": kinds}
        return web.json_response(
            {
                "id": "c-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )


@pytest_asyncio.fixture(params=["httpx", "aiohttp"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Platform, AsyncWishub]]:
    """The platform on loopback, and a client on each transport (five attempts a call)."""
    platform = Platform()
    server = TestServer(platform.app, host="127.0.0.1", shutdown_timeout=0.1)
    await server.start_server()
    base_url = f"http://127.0.0.1:{server.port}/v1"
    retry = RetryPolicy(attempts=5)
    try:
        async with AsyncWishub(
            app_key=KEY, base_url=base_url, backend=request.param, retry=retry
        ) as wh:
            yield platform, wh
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_rerank_routes_bodies_and_answers(served: tuple[Platform, AsyncWishub]) -> None:
    server, wh = served
    bge = await wh.rerank.create(model="BGE-Reranker-V2-m3", query="q", documents=DOCS)
    qwen = await wh.rerank.create(model="qwen3-rerank", query="q", documents=DOCS, top_n=2)
    gte = await wh.rerank.create(
        model="gte-rerank-v2", query="q", documents=DOCS, return_documents=False
    )
    assert [(path, auth) for path, auth, _ in server.seen] == [
        ("/v1/rerank", f"Bearer {KEY}"),
        ("/v1/reranks", f"Bearer {KEY}"),
        (DASHSCOPE, f"Bearer {KEY}"),
    ]
    openai_body = {"model": "BGE-Reranker-V2-m3", "query": "q", "documents": DOCS}
    assert server.seen[0][2] == {**openai_body, "return_documents": True}
    assert server.seen[1][2] == {
        **openai_body,
        "model": "qwen3-rerank",
        "return_documents": True,
        "top_n": 2,
    }
    assert server.seen[2][2] == {
        "model": "gte-rerank-v2",
        "input": {"query": "q", "documents": DOCS},
        "parameters": {"return_documents": False},
    }
    for result in (bge, qwen, gte):
        assert result.indices[:2] == [1, 2]
        assert [item.relevance_score for item in result][:2] == [0.9, 0.5]
        assert result.results[0].document == "beta"
    assert (bge.model, bge.id, bge.usage) == ("BGE-Reranker-V2-m3", "", None)
    assert (qwen.id, len(qwen), qwen.usage and qwen.usage.total_tokens) == ("jina-1", 2, 6)
    assert (gte.id, gte.model, gte.usage and gte.usage.total_tokens) == ("ds-1", "gte-rerank-v2", 9)


@pytest.mark.asyncio
async def test_images_body_and_both_formats(served: tuple[Platform, AsyncWishub]) -> None:
    server, wh = served
    [image] = await wh.images.generate(
        model="Qwen-Image", prompt="a cat", size="1024*768", negative_prompt="dogs"
    )
    urls = await wh.images.generate(
        model="Qwen-Image", prompt="a cat", n=2, response_format="url", seed=7
    )
    assert server.seen[0][0] == "/v1/images/generations"
    assert server.seen[0][2] == {
        "model": "Qwen-Image",
        "prompt": "a cat",
        "size": "1024*768",
        "negative_prompt": "dogs",
    }
    assert server.seen[1][2]["seed"] == 7
    assert (image.content, image.revised_prompt) == (PIXEL, "a cat")
    assert [picture.url for picture in urls] == [
        "https://img.example/0.png",
        "https://img.example/1.png",
    ]


@pytest.mark.asyncio
async def test_vision_parts_intact_and_flattened(served: tuple[Platform, AsyncWishub]) -> None:
    server, wh = served
    vision = user_message("what is it?", image_part(PIXEL))
    seen = await wh.chat.completions.create(model="GLM4.6V", messages=[vision])
    flat = wh.with_options(flatten_text_parts=True)
    joined = await flat.chat.completions.create(model="GLM-5.1", messages=[user_message("a", "b")])
    assert seen.text == "text,image_url"
    assert server.seen[0][2]["messages"] == [vision]
    url = server.seen[0][2]["messages"][0]["content"][1]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    assert joined.text == "a\nb"
    assert server.seen[1][2] == {
        "model": "GLM-5.1",
        "messages": [{"role": "user", "content": "a\nb"}],
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("envelope", ["nested", "flat"])
async def test_the_quota_429_is_typed_and_not_retried(
    served: tuple[Platform, AsyncWishub], envelope: Literal["nested", "flat"]
) -> None:
    server, wh = served
    server.spent["gte-rerank-v2"] = envelope
    with pytest.raises(QuotaExceededError) as caught:
        await wh.rerank.create(model="gte-rerank-v2", query="q", documents=DOCS)
    assert len(server.seen) == 1  # five attempts allowed, one sent
    error = caught.value
    assert (error.status_code, error.type, error.code) == (429, "FREE_QUOTA_EXHAUSTED", 429001)
    assert error.message == QUOTA_MESSAGE
    [status] = wh.key_status()
    assert status.state is KeyState.HEALTHY
    assert list(status.resting_models) == ["gte-rerank-v2"]
    answer = await wh.chat.completions.create(
        model="GLM-5.1", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.text == "hi"
    with pytest.raises(QuotaExceededError, match="not sent"):
        await wh.rerank.create(model="gte-rerank-v2", query="q", documents=DOCS)
    assert [path for path, _, _ in server.seen] == [DASHSCOPE, "/v1/chat/completions"]
