"""The API's resources (``wh.models`` ...): each builds a request and parses the reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._context import Send
from ._converter import structure_json
from ._http import Request
from .exceptions import InvalidRequestError
from .models import EmbeddingList, ModelList

__all__ = ["Embeddings", "Models", "request_body"]

_LIST_MODELS = Request("GET", "/models")


class Models:
    """``wh.models``: the models the AppKey may call."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def list(self) -> ModelList:
        """``GET /models``: the models this key's service group is bound to.

        Raises:
            APIError: the server refused (a wrong key gives ``AuthenticationError``).
            APIConnectionError: no answer arrived (after the retries).
            ResponseValidationError: the answer was not a model list.
        """
        response = await self._send(_LIST_MODELS)
        return structure_json(response.content, ModelList)


class Embeddings:
    """``wh.embeddings``: vectors for texts or token lists."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def create(
        self,
        *,
        model: str,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        encoding_format: Literal["float", "base64"] | None = None,
        dimensions: int | None = None,
        user: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> EmbeddingList:
        """``POST /embeddings``: one vector per input, in input order.

        Args:
            model: the embedding model's id.
            input: a string, a list of strings, a token list or a list of token lists.
            encoding_format: ``"float"`` (the platform's default) or ``"base64"``; the
                vectors come back as tuples of floats either way.
            dimensions: the vector size, for models that can shorten their vectors.
            user: an end-user id for the platform's abuse monitoring.
            extra_body: more JSON fields, sent as given (they win over the above).

        Raises:
            APIError: the server refused.
            APIConnectionError: no answer arrived (after the retries).
            ResponseValidationError: the answer was not an embedding list.
        """
        inputs: object = input
        if isinstance(inputs, Sequence) and not isinstance(inputs, str):
            inputs = list(inputs)
        body = request_body(
            {"model": model, "input": inputs},
            {"encoding_format": encoding_format, "dimensions": dimensions, "user": user},
            extra_body,
        )
        response = await self._send(Request("POST", "/embeddings", json=body, model=model))
        return structure_json(response.content, EmbeddingList)


def request_body(
    required: dict[str, Any], optional: Mapping[str, Any], extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A JSON body: the required fields, the optional ones that are not None, then extras.

    Raises:
        InvalidRequestError: ``model`` is not a non-empty string.
    """
    if not isinstance(required.get("model"), str) or not required["model"]:
        raise InvalidRequestError("model= must be a non-empty string (the model's id or name)")
    body = required
    body.update((name, value) for name, value in optional.items() if value is not None)
    if extra_body:
        body.update(extra_body)
    return body
