"""wishub-async: an async Python SDK for China Telecom Cloud's wishub model API."""

from __future__ import annotations

from ._budget import BudgetStatus, RateLimit, published_limits
from ._chat import ChatParams, ChatStream
from ._client import AsyncWishub
from ._errors import DEFAULT_ERROR_TABLE, ErrorRule, ErrorTable, KeyEffect
from ._events import BudgetWaited, Hooks, KeyStateChanged, RequestEnded, RetryScheduled
from ._fanout import Outcome, OutcomeList, OutcomeStream
from ._hosts import HOSTS
from ._http import Handler, Middleware, Request, Response
from ._keys import KeyPolicy
from ._rerank import DEFAULT_RERANK_ROUTES, RerankRoute, RerankRoutes
from ._retry import RetryPolicy
from ._status import KeyState, KeyStatus
from ._timeout import Timeout
from ._version import __version__ as __version__
from ._vision import (
    ContentPart,
    ImagePart,
    ImageURL,
    TextPart,
    UserMessage,
    image_data_url,
    image_part,
    text_part,
    user_message,
)
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchFileError,
    BudgetExceededError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    InvalidRequestError,
    KeyUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    WishubError,
)

__all__ = [
    "DEFAULT_ERROR_TABLE",
    "DEFAULT_RERANK_ROUTES",
    "HOSTS",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncWishub",
    "AuthenticationError",
    "BadRequestError",
    "BatchFileError",
    "BudgetExceededError",
    "BudgetStatus",
    "BudgetWaited",
    "ChatParams",
    "ChatStream",
    "ClientClosedError",
    "ClientStateError",
    "ConfigurationError",
    "ContentPart",
    "ErrorRule",
    "ErrorTable",
    "Handler",
    "Hooks",
    "ImagePart",
    "ImageURL",
    "InvalidRequestError",
    "KeyEffect",
    "KeyPolicy",
    "KeyState",
    "KeyStateChanged",
    "KeyStatus",
    "KeyUnavailableError",
    "Middleware",
    "NotFoundError",
    "Outcome",
    "OutcomeList",
    "OutcomeStream",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "Request",
    "RequestEnded",
    "RerankRoute",
    "RerankRoutes",
    "Response",
    "ResponseValidationError",
    "RetryPolicy",
    "RetryScheduled",
    "ServerError",
    "TextPart",
    "Timeout",
    "UserMessage",
    "WishubError",
    "image_data_url",
    "image_part",
    "published_limits",
    "text_part",
    "user_message",
]
