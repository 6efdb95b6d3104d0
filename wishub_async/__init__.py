"""wishub-async: an async Python SDK for China Telecom Cloud's wishub model API."""

from __future__ import annotations

import importlib.metadata as _metadata

from ._chat import ChatParams, ChatStream
from ._client import AsyncWishub
from ._errors import DEFAULT_ERROR_TABLE, ErrorRule, ErrorTable, KeyEffect
from ._events import Hooks, KeyStateChanged, RequestEnded, RetryScheduled
from ._fanout import Outcome, OutcomeList
from ._keys import KeyState, KeyStatus
from ._retry import RetryPolicy
from ._transport import Handler, Middleware, Request, Response

try:
    __version__ = _metadata.version("wishub-async")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_ERROR_TABLE",
    "AsyncWishub",
    "ChatParams",
    "ChatStream",
    "ErrorRule",
    "ErrorTable",
    "Handler",
    "Hooks",
    "KeyEffect",
    "KeyState",
    "KeyStateChanged",
    "KeyStatus",
    "Middleware",
    "Outcome",
    "OutcomeList",
    "Request",
    "RequestEnded",
    "Response",
    "RetryPolicy",
    "RetryScheduled",
]
