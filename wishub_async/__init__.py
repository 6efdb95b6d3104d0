"""wishub-async: an async Python SDK for China Telecom Cloud's wishub model API."""

from __future__ import annotations

from ._chat import ChatParams, ChatStream
from ._client import AsyncWishub
from ._errors import DEFAULT_ERROR_TABLE, ErrorRule, ErrorTable, KeyEffect
from ._events import Hooks, KeyStateChanged, RequestEnded, RetryScheduled
from ._fanout import Outcome, OutcomeList, OutcomeStream
from ._http import Handler, Middleware, Request, Response
from ._keys import KeyPolicy
from ._retry import RetryPolicy
from ._status import KeyState, KeyStatus
from ._timeout import Timeout
from ._version import __version__ as __version__
from .exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchFileError,
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
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncWishub",
    "AuthenticationError",
    "BadRequestError",
    "BatchFileError",
    "ChatParams",
    "ChatStream",
    "ClientClosedError",
    "ClientStateError",
    "ConfigurationError",
    "ErrorRule",
    "ErrorTable",
    "Handler",
    "Hooks",
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
    "RateLimitError",
    "Request",
    "RequestEnded",
    "Response",
    "ResponseValidationError",
    "RetryPolicy",
    "RetryScheduled",
    "ServerError",
    "Timeout",
    "WishubError",
]
