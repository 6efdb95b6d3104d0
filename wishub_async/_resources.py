"""The API's resources (``wh.models`` ...): each builds a request and parses the reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._converter import structure_json
from ._transport import Request, Response
from .models import ModelList

__all__ = ["Call", "Models"]

Call = Callable[[Request], Awaitable[Response]]

_LIST_MODELS = Request("GET", "/models")


class Models:
    """``wh.models``: the models the AppKey may call."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def list(self) -> ModelList:
        """``GET /models``: the models this key's service group is bound to.

        Raises:
            APIError: the server refused (a wrong key gives ``AuthenticationError``).
            APIConnectionError: no answer arrived (after the retries).
            ResponseValidationError: the answer was not a model list.
        """
        response = await self._call(_LIST_MODELS)
        return structure_json(response.content, ModelList)
