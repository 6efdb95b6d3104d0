"""``wh.rerank``: rank documents by relevance to a query, on the model's own route.

The platform serves rerank models on different paths with two body shapes: BGE
rerankers at ``/rerank`` (OpenAI/Jina body), ``qwen3-rerank`` at ``/reranks``, and
``gte-rerank-v2`` at DashScope's ``/api/v1/services/rerank/text-rerank/text-rerank``
from the host's root. Which model goes where is data (``RerankRoutes``) that users
extend; both response shapes are read into one ``RerankResult``.
"""

from __future__ import annotations

import fnmatch
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ._context import Send
from ._converter import decode_json, structure
from ._http import Request
from ._resources import request_body
from .exceptions import InvalidRequestError
from .models import RerankItem, RerankResult

__all__ = [
    "DASHSCOPE_RERANK_PATH",
    "DEFAULT_RERANK_ROUTES",
    "Rerank",
    "RerankRoute",
    "RerankRoutes",
    "RerankStyle",
]

RerankStyle = Literal["openai", "dashscope"]
"""The body shape of a rerank route: OpenAI/Jina's, or DashScope's."""

DASHSCOPE_RERANK_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"


def _check_path(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{attribute.name} must be a path starting with '/', not {value!r}")


@attrs.frozen
class RerankRoute:
    """Where a rerank model is served, and the body shape it speaks.

    Attributes:
        path: the path below the base URL (``/rerank``), or with ``at_root`` from the
            host's root (``/api/v1/services/...``).
        style: ``"openai"`` (OpenAI/Jina: ``query``, ``documents``, ``top_n``,
            ``return_documents`` at the top level) or ``"dashscope"`` (``input`` holds
            the query and documents, ``parameters`` the options).
        at_root: whether ``path`` starts at the host's root instead of the base URL.
    """

    path: str = attrs.field(validator=_check_path)
    style: RerankStyle = attrs.field(
        default="openai", validator=attrs.validators.in_(("openai", "dashscope"))
    )
    at_root: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


def _rows(value: Mapping[str, RerankRoute]) -> Mapping[str, RerankRoute]:
    if not isinstance(value, Mapping):
        raise TypeError(f"routes must be a mapping of pattern -> RerankRoute, not {value!r}")
    for pattern, route in value.items():
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"a route's pattern must be a non-empty str, not {pattern!r}")
        if not isinstance(route, RerankRoute):
            raise TypeError(f"the route for {pattern!r} must be a RerankRoute, not {route!r}")
    return types.MappingProxyType(dict(value))


@attrs.frozen
class RerankRoutes:
    """Which route each rerank model takes: rows of model pattern -> ``RerankRoute``.

    A pattern is a model name, or a glob such as ``bge-reranker*`` (``*`` and ``?``),
    matched without regard to case. Rows are tried in order and the first match wins;
    a model no row matches (a 32-hex id, say) takes ``default``. Extend the table
    rather than replace it:

        routes = DEFAULT_RERANK_ROUTES.with_routes(
            {"4bd107bff85941239e27b1509eccfe98": RerankRoute("/reranks")}
        )
        wh = AsyncWishub(rerank_routes=routes)
    """

    routes: Mapping[str, RerankRoute] = attrs.field(converter=_rows)
    default: RerankRoute = attrs.field(
        default=RerankRoute("/rerank"), validator=attrs.validators.instance_of(RerankRoute)
    )

    def with_routes(self, routes: Mapping[str, RerankRoute]) -> RerankRoutes:
        """Return a table where ``routes`` come first, so they win over existing rows."""
        rows = _rows(routes)
        kept = {pattern: route for pattern, route in self.routes.items() if pattern not in rows}
        return attrs.evolve(self, routes={**rows, **kept})

    def route_for(self, model: str) -> RerankRoute:
        """The route of ``model``: the first row whose pattern matches, else ``default``."""
        name = model.lower()
        for pattern, route in self.routes.items():
            if fnmatch.fnmatchcase(name, pattern.lower()):
                return route
        return self.default


DEFAULT_RERANK_ROUTES = RerankRoutes(
    {
        "bge-reranker*": RerankRoute("/rerank"),
        "qwen3-rerank": RerankRoute("/reranks"),
        "gte-rerank-v2": RerankRoute(DASHSCOPE_RERANK_PATH, style="dashscope", at_root=True),
    }
)
"""The platform's rerank routes as far as they are known (``wishub-api.md``): BGE
rerankers at ``/rerank``, ``qwen3-rerank`` at ``/reranks``, ``gte-rerank-v2`` on
DashScope's route from the host's root; anything else at ``/rerank``."""


class Rerank:
    """``wh.rerank``: documents ranked by relevance to a query."""

    def __init__(self, send: Send, routes: RerankRoutes) -> None:
        self._send = send
        self._routes = routes

    async def create(
        self,
        *,
        model: str,
        query: str,
        documents: Sequence[str | Mapping[str, Any]],
        top_n: int | None = None,
        return_documents: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> RerankResult:
        """Rank ``documents`` by relevance to ``query``; the most relevant first.

        The model's route (path and body shape) comes from the client's
        ``rerank_routes`` (default ``DEFAULT_RERANK_ROUTES``).

        Args:
            model: the rerank model's name or id.
            query: the query.
            documents: the texts to rank (strings, or ``{"text": ...}`` objects for
                servers that take them), sent as given.
            top_n: return only the best ``top_n`` (default: all).
            return_documents: whether the answer repeats each document's text.
            extra_body: more JSON fields, merged in last.
            **extra: other parameters, sent as they are at the top level (None: not
                sent). An object given for a field the body already has (DashScope's
                ``parameters``, say) is merged into it.

        Raises:
            APIError: the server refused.
            APIConnectionError: no answer arrived (after the retries).
            ResponseValidationError: the answer was not a rerank result.
            InvalidRequestError: ``query`` is not a string, or ``documents`` not a
                list.
        """
        if not isinstance(query, str):
            raise InvalidRequestError(f"query= must be a str, not {type(query).__name__}")
        given: object = documents
        if isinstance(given, str | bytes | Mapping) or not isinstance(given, Sequence):
            raise InvalidRequestError("documents= must be a list of texts")
        route = self._routes.route_for(model) if isinstance(model, str) else self._routes.default
        shaped = _body(
            route.style,
            model,
            query,
            list(documents),
            top_n=top_n,
            return_documents=return_documents,
        )
        body = request_body(shaped, {}, None)  # checks the model
        _merge(body, {name: value for name, value in extra.items() if value is not None})
        _merge(body, extra_body)
        request = Request("POST", route.path, json=body, model=model, at_root=route.at_root)
        response = await self._send(request)
        return read_rerank(response.content, model)


def _body(
    style: RerankStyle,
    model: str,
    query: str,
    documents: list[Any],
    *,
    top_n: int | None,
    return_documents: bool,
) -> dict[str, Any]:
    options: dict[str, Any] = {"return_documents": return_documents}
    if top_n is not None:
        options["top_n"] = top_n
    if style == "dashscope":
        return {
            "model": model,
            "input": {"query": query, "documents": documents},
            "parameters": options,
        }
    return {"model": model, "query": query, "documents": documents, **options}


def _merge(body: dict[str, Any], extra_body: Mapping[str, Any] | None) -> None:
    """Merge ``extra_body`` into ``body``; objects on both sides are merged one level."""
    for name, value in (extra_body or {}).items():
        mine = body.get(name)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            body[name] = {**mine, **value}
        else:
            body[name] = value


def read_rerank(content: bytes, model: str) -> RerankResult:
    """A ``RerankResult`` from either response shape, ranked from most relevant.

    Raises:
        ResponseValidationError: the body is not JSON or has neither shape.
    """
    data = decode_json(content)
    if not isinstance(data, dict):
        return structure(data, RerankResult, content)  # raises, naming the problem
    output = data.get("output")
    if "results" not in data and isinstance(output, dict):  # DashScope's shape
        data = {**data, "results": output.get("results")}
    results = data.get("results")
    data = {
        **data,
        "id": data.get("id") or data.get("request_id") or "",
        "model": data.get("model") or model,
        "results": [_item(item) for item in results] if isinstance(results, list) else results,
    }
    result = structure(data, RerankResult, content)
    ranked = sorted(result.results, key=_rank)
    return attrs.evolve(result, results=tuple(ranked))


def _item(item: Any) -> Any:
    """One result with its document as text, and ``score`` read as ``relevance_score``."""
    if not isinstance(item, dict):
        return item
    document = item.get("document")
    if isinstance(document, dict) and isinstance(document.get("text"), str):
        item = {**item, "document": document["text"]}
    if item.get("relevance_score") is None and "score" in item:
        item = {**item, "relevance_score": item["score"]}
    return item


def _rank(item: RerankItem) -> tuple[float, int]:
    return -item.relevance_score, item.index
