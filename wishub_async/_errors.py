"""The error-type table, and the one place that reads error bodies.

The table is data: each platform error ``type`` (or a telling piece of its message)
maps to an ``ErrorRule`` naming the exception class, whether the same key may be
retried, and what the error does to the key's health. Unknown types fall back to the
HTTP status, then to its family.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import re
import time
import types
from collections.abc import Mapping
from typing import Any

import attrs

from ._text import excerpt
from .exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)

__all__ = [
    "DEFAULT_ERROR_TABLE",
    "ErrorRule",
    "ErrorTable",
    "KeyEffect",
    "api_error",
    "error_name",
    "is_error_body",
    "parse_retry_after",
    "request_id",
]

_TYPE_NAME = re.compile(r"^[A-Z0-9_]+$")
_CODE = re.compile(r"-?[0-9]{1,18}")
"""A numeric error code: ASCII digits only, short enough to be a code and not a novel."""
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-ctyun-request-id", "x-trace-id")


class KeyEffect(enum.Enum):
    """What an error does to the health of the AppKey that got it."""

    NONE = "none"
    """Nothing: the error is about the request or the platform, not the key."""
    COOL = "cool"
    """Cool the key down until Retry-After (or the backoff) has passed."""
    LONG_COOL = "long_cool"
    """Cool the key down for ``KeyPolicy.quota_cooldown`` (quota used up)."""
    BLOCK_MODEL = "block_model"
    """Stop using the key for the call's model for ``KeyPolicy.quota_cooldown``; the
    key still serves other models (a model's free quota used up)."""
    QUARANTINE = "quarantine"
    """Take the key out of rotation until ``check_keys()`` finds it working."""


@attrs.frozen
class ErrorRule:
    """How one kind of error is raised and handled.

    Attributes:
        exception: the ``APIError`` subclass raised.
        retry: whether the same key may be tried again.
        key_effect: what the error does to the key. Any effect other than
            ``KeyEffect.NONE`` makes the error key-scoped: with several keys, the
            request moves to another healthy key instead of waiting.
    """

    exception: type[APIError]
    retry: bool
    key_effect: KeyEffect = KeyEffect.NONE

    @property
    def key_scoped(self) -> bool:
        """Whether another key could succeed where this one failed."""
        return self.key_effect is not KeyEffect.NONE


def _readonly(rows: Mapping[Any, ErrorRule]) -> Mapping[Any, ErrorRule]:
    return types.MappingProxyType(dict(rows))


_AUTH = ErrorRule(AuthenticationError, retry=False, key_effect=KeyEffect.QUARANTINE)
_SERVER = ErrorRule(ServerError, retry=True)
_RATE = ErrorRule(RateLimitError, retry=True, key_effect=KeyEffect.COOL)
_QUOTA = ErrorRule(QuotaExceededError, retry=False, key_effect=KeyEffect.LONG_COOL)
_NOT_FOUND = ErrorRule(NotFoundError, retry=False)
_BAD = ErrorRule(BadRequestError, retry=False)
_DENIED = ErrorRule(PermissionDeniedError, retry=False)
_OTHER = ErrorRule(APIError, retry=False)
_MODEL_QUOTA = ErrorRule(QuotaExceededError, retry=False, key_effect=KeyEffect.BLOCK_MODEL)


@attrs.frozen
class ErrorTable:
    """Maps an error's message, ``code``, ``type`` and HTTP status to an ``ErrorRule``.

    Extend it rather than replace it:

        table = DEFAULT_ERROR_TABLE.with_types(
            {"MODEL_BUSY": ErrorRule(ServerError, retry=True)}
        )
        wh = AsyncWishub(error_table=table)
    """

    types: Mapping[str, ErrorRule] = attrs.field(converter=_readonly)
    statuses: Mapping[int, ErrorRule] = attrs.field(converter=_readonly)
    messages: Mapping[str, ErrorRule] = attrs.field(factory=dict, converter=_readonly)
    """Pieces of text that decide by themselves wherever they stand in the message
    (the platform sends a spent free quota as a 429 that only its message tells from
    a rate limit)."""
    broad_types: frozenset[str] = frozenset({"invalid_request_error"})
    """Types too broad to beat a status with its own row: OpenAI-style servers send
    ``invalid_request_error`` with 401, 404 and 429 too, naming the real error in
    ``code`` (``invalid_api_key``, ``model_not_found``...)."""

    def with_types(self, rules: Mapping[str, ErrorRule]) -> ErrorTable:
        """Return a table where ``rules`` add to (or override) the type rows."""
        return attrs.evolve(self, types={**self.types, **rules})

    def with_statuses(self, rules: Mapping[int, ErrorRule]) -> ErrorTable:
        """Return a table where ``rules`` add to (or override) the status rows."""
        return attrs.evolve(self, statuses={**self.statuses, **rules})

    def with_messages(self, rules: Mapping[str, ErrorRule]) -> ErrorTable:
        """Return a table where ``rules`` add to (or override) the message rows."""
        return attrs.evolve(self, messages={**self.messages, **rules})

    def rule_for(
        self,
        error_type: str | None,
        status_code: int,
        code: str | None = None,
        message: str | None = None,
    ) -> ErrorRule:
        """The rule for an error.

        In order: a piece of text of ``messages`` found in the message, a textual
        ``code`` in the table (OpenAI's ``invalid_api_key``), the ``type`` (unless it
        is one of ``broad_types`` and the status has a row), the status, then the
        status family (5xx: server error; else a plain ``APIError``).
        """
        if message and self.messages:
            for piece, by_message in self.messages.items():
                if piece in message:
                    return by_message
        by_status = self.statuses.get(status_code)
        for name in (code, error_type):
            rule = self._by_name(name)
            if rule is not None and not (name in self.broad_types and by_status is not None):
                return rule
        if by_status is not None:
            return by_status
        return _SERVER if status_code >= 500 else _OTHER  # noqa: PLR2004 - the 5xx family

    def _by_name(self, name: str | None) -> ErrorRule | None:
        if not name:
            return None
        return self.types.get(name) or self.types.get(name.lower())


DEFAULT_ERROR_TABLE = ErrorTable(
    types={
        "INCORRECT_API_KEY_PROVIDED": _AUTH,
        "invalid_api_key": _AUTH,
        "authentication_error": _AUTH,
        "INVOKE_MODEL_ERROR": _SERVER,
        "server_error": _SERVER,
        "rate_limit_exceeded": _RATE,
        "insufficient_quota": _QUOTA,
        "model_not_found": _NOT_FOUND,
        "invalid_request_error": _BAD,
        "permission_denied": _DENIED,
    },
    statuses={
        400: _BAD,
        401: _AUTH,
        403: _DENIED,
        404: _NOT_FOUND,
        408: _SERVER,
        422: _BAD,
        429: _RATE,
        500: _SERVER,
        502: _SERVER,
        503: _SERVER,
        504: _SERVER,
    },
    messages={"免费额度已结束": _MODEL_QUOTA},
)
"""The default error table; the "Retries and errors" guide explains each row."""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return max(seconds / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.endswith("ms"):
        seconds = _number(value[:-2])
        return None if seconds is None else max(seconds / 1000.0, 0.0)
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def api_error(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    label: str | None,
    table: ErrorTable,
) -> APIError:
    """Build the typed ``APIError`` for a non-2xx response (or an in-stream error).

    ``headers`` and ``content`` must already be free of the key (the pipeline
    replaces an echoed key before anything reads them).
    """
    try:
        body: Any = json.loads(content) if content.strip() else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        body = None
    fields = _envelope(body) if body is not None else None
    if fields is None:
        body = content.decode("utf-8", "replace")
        error_type, code, param, code_name = None, None, None, None
        kind = headers.get("content-type", "unknown content type").split(";")[0]
        message = (
            f"empty error body ({kind})"
            if not body.strip()
            else f"non-JSON error body ({kind}): {excerpt(body)}"
        )
    else:
        error_type, code, message, param, code_name = fields
    if 300 <= status_code < 400 and "location" in headers:  # noqa: PLR2004 - redirects
        # We never follow redirects (the key must not travel to another host).
        message = f"redirect to {excerpt(headers['location'])} not followed; check base_url"
    rule = table.rule_for(error_type, status_code, code_name, message)
    return error_for(
        rule,
        message,
        status_code=status_code,
        type=error_type,
        code=code,
        param=param,
        request_id=request_id(headers),
        body=body,
        label=label,
        headers=headers,
    )


def request_id(headers: Mapping[str, str]) -> str | None:
    """The request id a response's headers carry (lower-case names), if any."""
    return next((headers[name] for name in _REQUEST_ID_HEADERS if name in headers), None)


def error_for(rule: ErrorRule, message: str, **fields: Any) -> APIError:
    """The rule's exception, with the rule and its retry-relevant header facts attached."""
    headers: Mapping[str, str] = fields.pop("headers", {})
    error = rule.exception(message, retry_after=parse_retry_after(headers), **fields)
    error.rule = rule
    should = headers.get("x-should-retry")
    error.should_retry = None if should is None else should.strip().lower() == "true"
    return error


def _envelope(body: Any) -> tuple[str | None, int | None, str, str | None, str | None] | None:
    """(type, code, message, param, textual code) from an envelope, or None if absent."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    inner: dict[str, Any] = error if isinstance(error, dict) else {}
    top_message = body.get("message")
    error_type = _text(inner.get("type")) or _text(body.get("type"))
    if error_type is None and isinstance(top_message, str) and _TYPE_NAME.match(top_message):
        error_type = top_message
    message = (
        _text(inner.get("message"))
        or (error if isinstance(error, str) and error else None)
        or _text(body.get("detail"))
        or _text(top_message)
        or error_type
        or f"error body without a message: {excerpt(json.dumps(body, ensure_ascii=False))}"
    )
    code = _code(inner.get("code"))
    if code is None:
        code = _code(body.get("code"))
    raw = inner.get("code")
    code_name = raw if isinstance(raw, str) and code is None and raw else None
    param = _text(inner.get("param")) or _text(body.get("param"))
    return error_type, code, message, param, code_name


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False) or None
    return None


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _CODE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def error_name(error: Exception) -> str:
    """The platform error type if there is one, else the exception class name."""
    if isinstance(error, APIError) and error.type:
        return error.type
    return type(error).__name__


_RESULT_FIELDS = ("choices", "data", "results", "output")


def is_error_body(data: Any) -> bool:
    """Whether decoded JSON is an error envelope rather than a result."""
    return (
        isinstance(data, dict)
        and bool(data.get("error"))
        and not any(data.get(field) for field in _RESULT_FIELDS)
    )
