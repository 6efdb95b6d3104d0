"""``wh.rerank``: routes as data, both body shapes, both response shapes."""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs
import pytest
from conftest import K1, over_http

from wishub_async import (
    DEFAULT_RERANK_ROUTES,
    AsyncWishub,
    Request,
    RerankRoute,
    RerankRoutes,
)
from wishub_async._rerank import DASHSCOPE_RERANK_PATH, read_rerank
from wishub_async.exceptions import (
    BadRequestError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    ResponseValidationError,
)
from wishub_async.models import RerankItem, RerankResult, Usage
from wishub_async.testing import FakeWishub

BGE, QWEN, GTE = "BGE-Reranker-V2-m3", "qwen3-rerank", "gte-rerank-v2"
HEX = "9dc913a037774fc0b248376905c85da5"
DOCS = ["the stock market fell", "pandas eat bamboo", "a panda sleeps"]
PATHS = {BGE: "/v1/rerank", QWEN: "/v1/reranks", GTE: DASHSCOPE_RERANK_PATH, HEX: "/v1/rerank"}


@pytest.fixture
def fake() -> FakeWishub:
    return FakeWishub({K1: [BGE, QWEN, GTE, HEX, "m-1"]})


# -- the routes table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "style", "at_root"),
    [
        ("BGE-Reranker-V2-m3", "/rerank", "openai", False),
        ("bge-reranker-large", "/rerank", "openai", False),
        ("qwen3-rerank", "/reranks", "openai", False),
        ("Qwen3-Rerank", "/reranks", "openai", False),
        ("gte-rerank-v2", DASHSCOPE_RERANK_PATH, "dashscope", True),
        ("GTE-Rerank-V2", DASHSCOPE_RERANK_PATH, "dashscope", True),
        (HEX, "/rerank", "openai", False),
        ("some-new-reranker", "/rerank", "openai", False),
        ("测试模型名称1", "/rerank", "openai", False),
    ],
)
def test_default_routes(model: str, path: str, style: str, at_root: bool) -> None:
    route = DEFAULT_RERANK_ROUTES.route_for(model)
    assert (route.path, route.style, route.at_root) == (path, style, at_root)


def test_with_routes_puts_new_rows_first_so_they_win() -> None:
    special = RerankRoute("/special")
    routes = DEFAULT_RERANK_ROUTES.with_routes(
        {"bge-reranker-special": special, HEX: RerankRoute("/reranks")}
    )
    assert routes.route_for("BGE-Reranker-Special") is special
    assert routes.route_for("bge-reranker-v2-m3").path == "/rerank"
    assert routes.route_for(HEX).path == "/reranks"
    assert list(routes.routes)[:2] == ["bge-reranker-special", HEX]
    again = routes.with_routes({"qwen3-rerank": RerankRoute("/v2/rerank")})
    assert next(iter(again.routes)) == "qwen3-rerank"
    assert again.route_for(QWEN).path == "/v2/rerank"
    assert len(again.routes) == len(routes.routes)
    assert DEFAULT_RERANK_ROUTES.route_for(HEX).path == "/rerank"  # the default is untouched


def test_a_routes_table_with_its_own_default_and_globs() -> None:
    routes = RerankRoutes({"acme-*-v?": RerankRoute("/acme")}, default=RerankRoute("/reranks"))
    assert routes.route_for("ACME-big-v2").path == "/acme"
    assert routes.route_for("acme-big-v10").path == "/reranks"


def test_routes_are_read_only_and_checked() -> None:
    with pytest.raises(TypeError):
        DEFAULT_RERANK_ROUTES.routes["x"] = RerankRoute("/x")  # type: ignore[index]
    with pytest.raises(ValueError, match="starting with '/'"):
        RerankRoute("rerank")
    with pytest.raises(ValueError, match="style"):
        RerankRoute("/rerank", style="cohere")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RerankRoute"):
        RerankRoutes({"x": "/rerank"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="pattern"):
        DEFAULT_RERANK_ROUTES.with_routes({"": RerankRoute("/x")})


def test_the_client_option_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="rerank_routes"):
        AsyncWishub(app_key=K1, rerank_routes={"x": RerankRoute("/x")})  # type: ignore[arg-type]


# -- against the fake ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("model", [BGE, QWEN, GTE, HEX])
async def test_each_route_is_hit_and_the_answer_ranked(
    fake: FakeWishub, transport: str, model: str
) -> None:
    async with over_http(fake, backend=transport) as wh:
        result = await wh.rerank.create(model=model, query="panda bamboo", documents=DOCS)
    [request] = fake.requests
    assert request.path == PATHS[model]
    assert request.headers["content-type"] == "application/json"
    assert isinstance(result, RerankResult)
    assert result.indices == [1, 2, 0]
    assert [item.document for item in result] == [DOCS[1], DOCS[2], DOCS[0]]
    assert result.results[0] == RerankItem(index=1, relevance_score=0.5, document=DOCS[1])
    assert result.model == model
    assert result.id.startswith("rerank-fake-")
    assert result.usage is not None
    assert result.usage.total_tokens > 0
    assert len(result) == 3


@pytest.mark.anyio
async def test_the_openai_body(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        await wh.rerank.create(model=BGE, query="q", documents=DOCS, top_n=2)
        await wh.rerank.create(model=BGE, query="q", documents=DOCS, return_documents=False)
    assert fake.requests[0].json == {
        "model": BGE,
        "query": "q",
        "documents": DOCS,
        "return_documents": True,
        "top_n": 2,
    }
    assert fake.requests[1].json == {
        "model": BGE,
        "query": "q",
        "documents": DOCS,
        "return_documents": False,
    }


@pytest.mark.anyio
async def test_the_dashscope_body_at_the_host_root(fake: FakeWishub) -> None:
    seen: list[Request] = []

    async def record(request: Request, call_next: Any) -> Any:
        seen.append(request)
        return await call_next(request)

    async with fake.client(app_key=K1, middleware=[record]) as wh:
        result = await wh.rerank.create(model=GTE, query="panda", documents=DOCS, top_n=1)
    [request] = fake.requests
    assert request.path == DASHSCOPE_RERANK_PATH  # not below /v1
    assert request.json == {
        "model": GTE,
        "input": {"query": "panda", "documents": DOCS},
        "parameters": {"return_documents": True, "top_n": 1},
    }
    assert seen[0].at_root
    assert seen[0].model == GTE
    assert seen[0].path == DASHSCOPE_RERANK_PATH
    assert result.indices == [2]
    assert result.results[0].document == DOCS[2]
    assert result.usage is not None
    assert result.usage.total_tokens == 11  # DashScope counts total tokens only
    assert result.usage.prompt_tokens == 0


@pytest.mark.anyio
async def test_top_n_and_no_documents(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        for model in (BGE, GTE):
            result = await wh.rerank.create(
                model=model, query="panda", documents=DOCS, top_n=1, return_documents=False
            )
            assert result.indices == [2]
            assert result.results[0].document is None


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["object", "string"])
async def test_documents_as_strings_or_objects_and_unranked_answers(
    fake: FakeWishub, form: Literal["object", "string"]
) -> None:
    fake.rerank.document = form
    fake.rerank.ranked = False  # the server sends input order: the client ranks
    documents: list[Any] = [{"text": text} for text in DOCS]
    async with fake.client(app_key=K1) as wh:
        result = await wh.rerank.create(model=QWEN, query="panda bamboo", documents=documents)
    assert fake.requests[0].json["documents"] == documents  # sent as given
    assert result.indices == [1, 2, 0]
    assert result.results[0].document == DOCS[1]


@pytest.mark.anyio
async def test_extra_parameters_pass_through_and_merge(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        await wh.rerank.create(
            model=GTE,
            query="q",
            documents=DOCS,
            parameters={"instruct": "rank it"},
            user=None,
            extra_body={"input": {"lang": "en"}, "tag": 1},
        )
        await wh.rerank.create(model=BGE, query="q", documents=DOCS, instruction="be fair")
    assert fake.requests[0].json == {
        "model": GTE,
        "input": {"query": "q", "documents": DOCS, "lang": "en"},
        "parameters": {"return_documents": True, "instruct": "rank it"},
        "tag": 1,
    }
    assert fake.requests[1].json["instruction"] == "be fair"


@pytest.mark.anyio
async def test_a_custom_route_from_the_client_and_a_view(fake: FakeWishub) -> None:
    dashscope = RerankRoute(DASHSCOPE_RERANK_PATH, style="dashscope", at_root=True)
    routes = DEFAULT_RERANK_ROUTES.with_routes({HEX: dashscope})
    async with fake.client(app_key=K1, rerank_routes=routes) as wh:
        await wh.rerank.create(model=HEX, query="q", documents=DOCS)
        view = wh.with_options(rerank_routes=DEFAULT_RERANK_ROUTES)
        await view.rerank.create(model=HEX, query="q", documents=DOCS)
    assert [request.path for request in fake.requests] == [DASHSCOPE_RERANK_PATH, "/v1/rerank"]


@pytest.mark.anyio
async def test_arguments_are_checked_before_anything_is_sent(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(InvalidRequestError, match="documents"):
            await wh.rerank.create(model=BGE, query="q", documents="one text")
        with pytest.raises(InvalidRequestError, match="query"):
            await wh.rerank.create(model=BGE, query=["q"], documents=DOCS)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="model"):
            await wh.rerank.create(model="", query="q", documents=DOCS)
        with pytest.raises(InvalidRequestError, match="model"):
            await wh.rerank.create(model=None, query="q", documents=DOCS)  # type: ignore[arg-type]
    assert fake.requests == []


@pytest.mark.anyio
async def test_errors_are_typed(fake: FakeWishub) -> None:
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(NotFoundError):
            await wh.rerank.create(model="unknown-reranker", query="q", documents=DOCS)
        with pytest.raises(BadRequestError):
            await wh.rerank.create(model=BGE, query="q", documents=[])
        with pytest.raises(BadRequestError):
            await wh.rerank.create(model=GTE, query="q", documents=[{"no": "text"}])


@pytest.mark.anyio
async def test_the_fake_does_not_serve_the_root_route_below_v1(fake: FakeWishub) -> None:
    below = RerankRoute(DASHSCOPE_RERANK_PATH, style="dashscope")  # at_root forgotten
    routes = DEFAULT_RERANK_ROUTES.with_routes({GTE: below})
    async with fake.client(app_key=K1, rerank_routes=routes) as wh:
        with pytest.raises(NotFoundError, match="no route"):
            await wh.rerank.create(model=GTE, query="q", documents=DOCS)
    assert fake.requests[0].path == "/v1" + DASHSCOPE_RERANK_PATH


# -- reading the answer ----------------------------------------------------------------


def read(body: Any, model: str = "m") -> RerankResult:
    return read_rerank(json.dumps(body).encode(), model)


def test_reads_the_openai_shape_with_string_documents() -> None:
    result = read(
        {
            "id": "r-1",
            "model": "bge",
            "results": [
                {"index": 0, "relevance_score": 0.1, "document": "a"},
                {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
                {"index": 2, "relevance_score": 0.9},
            ],
            "usage": {"total_tokens": 7, "prompt_tokens": 7},
            "future_field": True,
        }
    )
    assert result == RerankResult(
        results=(
            RerankItem(1, 0.9, "b"),
            RerankItem(2, 0.9, None),
            RerankItem(0, 0.1, "a"),
        ),
        model="bge",
        id="r-1",
        usage=Usage(prompt_tokens=7, total_tokens=7),
    )


def test_reads_the_dashscope_shape() -> None:
    result = read(
        {
            "output": {
                "results": [
                    {"index": 1, "relevance_score": 0.2, "document": {"text": "b"}},
                    {"index": 0, "relevance_score": 0.8, "document": {"text": "a"}},
                ]
            },
            "usage": {"total_tokens": 12},
            "request_id": "1f2e",
        },
        model="gte-rerank-v2",
    )
    assert result.indices == [0, 1]
    assert [item.document for item in result] == ["a", "b"]
    assert (result.id, result.model, result.usage) == ("1f2e", "gte-rerank-v2", Usage(0, 0, 12))


def test_reads_score_as_relevance_score_and_integer_scores() -> None:
    result = read({"results": [{"index": 0, "score": 1}, {"index": 1, "relevance_score": 2}]})
    assert [(item.index, item.relevance_score) for item in result] == [(1, 2.0), (0, 1.0)]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"results": [{"index": 0, "relevance_score": "high"}]}, "$.results[0].relevance_score"),
        ({"results": [{"index": 0, "relevance_score": 1, "document": {"t": 1}}]}, "document"),
        ({"results": [{"relevance_score": 1}]}, "$.results[0].index"),
        ({"results": "none"}, "$.results"),
        ({"output": {"results": [{"index": "0", "relevance_score": 1}]}}, "$.results[0].index"),
        ([], "$"),
    ],
)
def test_a_body_that_does_not_fit_names_the_field(body: Any, path: str) -> None:
    with pytest.raises(ResponseValidationError) as caught:
        read(body)
    assert path in caught.value.path


def test_a_body_that_is_not_json() -> None:
    with pytest.raises(ResponseValidationError, match="expected a JSON body"):
        read_rerank(b"<html>", "m")


def test_an_empty_answer_is_an_empty_result() -> None:
    assert read({"results": []}) == RerankResult(model="m")
    assert attrs.evolve(read({"output": {"results": []}}), model="x").model == "x"
