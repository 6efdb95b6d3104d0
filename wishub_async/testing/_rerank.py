"""The fake's rerank endpoints: ``/rerank``, ``/reranks`` and DashScope's route.

Scores are deterministic: the share of the query's words (and CJK characters) that a
document contains. The OpenAI/Jina routes answer ``{"results": [...], "usage"}``;
the DashScope route, from the host's root, answers ``{"output": {"results": [...]},
"usage": {"total_tokens"}, "request_id"}``, as the platform's services do.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._replies import error_reply, json_reply

if TYPE_CHECKING:
    from ._fake import FakeWishub
    from ._replies import Reply

__all__ = ["DASHSCOPE_PATH", "FakeRerank", "dashscope_rerank_route", "rerank_route"]

DASHSCOPE_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"
"""DashScope's rerank route, from the host's root (not below ``/v1``)."""

_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3400-\u9fff]")


@attrs.define
class FakeRerank:
    """How the rerank routes answer (``fake.rerank``); change it freely.

    Attributes:
        document: how the OpenAI/Jina routes return a document: ``"object"``
            (``{"text": ...}``, Jina's way) or ``"string"``. DashScope's route always
            sends the object.
        ranked: whether results come most relevant first (as real servers send
            them); False sends them in input order.
        requests: rerank requests answered, each route's body as received.
    """

    document: Literal["object", "string"] = "object"
    ranked: bool = True
    requests: list[Any] = attrs.field(factory=list)
    _serial: int = 0

    def _next_id(self) -> str:
        self._serial += 1
        return f"rerank-fake-{self._serial}"


def _tokens(text: str) -> set[str]:
    lowered = text.lower()
    return set(_WORD.findall(lowered)) | set(_CJK.findall(lowered))


def _text(document: Any) -> str | None:
    if isinstance(document, dict):
        document = document.get("text")
    return document if isinstance(document, str) else None


def _ranked(
    behaviour: FakeRerank, query: str, texts: list[str], top_n: Any
) -> list[tuple[int, float]]:
    wanted = _tokens(query)
    scores = [
        (index, round(len(wanted & _tokens(text)) / len(wanted), 4) if wanted else 0.0)
        for index, text in enumerate(texts)
    ]
    if behaviour.ranked:
        scores.sort(key=lambda pair: (-pair[1], pair[0]))
    if isinstance(top_n, int) and top_n > 0:
        ranked = sorted(scores, key=lambda pair: (-pair[1], pair[0]))[:top_n]
        scores = [pair for pair in scores if pair in ranked]
    return scores


def _check(
    fake: FakeWishub, key: str, model: Any, query: Any, documents: Any
) -> tuple[Reply | None, list[str]]:
    """An error reply for a bad request (or None), and the documents' texts."""
    if model not in fake.models_of(key):
        return error_reply(type="model_not_found", message=f"model {model!r} not found"), []
    texts = [_text(document) for document in documents] if isinstance(documents, list) else []
    if not isinstance(query, str) or not texts or None in texts:
        message = "query (a string) and documents (a non-empty list of texts) are required"
        return error_reply(type="invalid_request_error", message=message), []
    return None, [text for text in texts if text is not None]


async def rerank_route(fake: FakeWishub, key: str, payload: Any) -> Reply:
    """``POST /rerank`` and ``POST /reranks``: the OpenAI/Jina shape."""
    body = payload if isinstance(payload, dict) else {}
    model = body.get("model")
    refusal, texts = _check(fake, key, model, body.get("query"), body.get("documents"))
    if refusal is not None:
        return refusal
    behaviour: FakeRerank = fake.rerank
    behaviour.requests.append(payload)
    show = body.get("return_documents", True) is not False
    results = []
    for index, score in _ranked(behaviour, body["query"], texts, body.get("top_n")):
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if show:
            text = texts[index]
            item["document"] = text if behaviour.document == "string" else {"text": text}
        results.append(item)
    tokens = _count(body["query"], texts)
    answer = {
        "id": behaviour._next_id(),  # noqa: SLF001 - its own counter
        "model": model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_reply(answer)


async def dashscope_rerank_route(fake: FakeWishub, key: str, payload: Any) -> Reply:
    """``POST /api/v1/services/rerank/text-rerank/text-rerank``: DashScope's shape."""
    body = payload if isinstance(payload, dict) else {}
    given = _object(body, "input")
    options = _object(body, "parameters")
    refusal, texts = _check(
        fake, key, body.get("model"), given.get("query"), given.get("documents")
    )
    if refusal is not None:
        return refusal
    behaviour: FakeRerank = fake.rerank
    behaviour.requests.append(payload)
    show = options.get("return_documents", False) is True  # DashScope's default: no text
    results = []
    for index, score in _ranked(behaviour, given["query"], texts, options.get("top_n")):
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if show:
            item["document"] = {"text": texts[index]}
        results.append(item)
    answer = {
        "output": {"results": results},
        "usage": {"total_tokens": _count(given["query"], texts)},
        "request_id": behaviour._next_id(),  # noqa: SLF001 - its own counter
    }
    return json_reply(answer)


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    return value if isinstance(value, dict) else {}


def _count(query: str, texts: list[str]) -> int:
    return sum(len(_WORD.findall(text)) + len(_CJK.findall(text)) for text in [query, *texts])
