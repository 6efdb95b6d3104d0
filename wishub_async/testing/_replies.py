"""What the fake answers: ``Reply``, scripted ``Failure``s, and the JSON helpers.

A leaf of the testing package: the endpoints (``_chat``, ``_rerank``, ``_images``),
the fake itself (``_fake``) and the loopback server (``_server``) all build on it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Literal

import anyio
import attrs

__all__ = [
    "CUT_BODY",
    "DEFAULT_MODELS",
    "FREE_QUOTA_ENDED",
    "JSON_HEADERS",
    "Drop",
    "Failure",
    "Reply",
    "Shape",
    "dumps",
    "error_reply",
    "json_reply",
    "model_list",
]

DEFAULT_MODELS: tuple[str, ...] = (
    "4bd107bff85941239e27b1509eccfe98",
    "9dc913a037774fc0b248376905c85da5",
    "测试模型名称1",
)
"""Model ids every key sees unless told otherwise (a hex id and a non-ASCII one)."""

CUT_BODY = b'{"object": "list", "data": [{"id": "4bd1'
"""What a ``drop_mid_body`` reply sends before the connection dies."""
FREE_QUOTA_ENDED = "免费额度已结束，请开通付费"  # noqa: RUF001 - the platform's full-width comma
"""The message of the platform's 429 when a model's free quota has run out."""

Shape = Literal[
    "error",
    "flat",
    "html",
    "empty",
    "drop",
    "drop_mid_body",
    "reset",
    "reset_after_headers",
    "truncated",
    "slow_body",
]
"""How a scripted failure answers:

- ``"error"``: ``{"error": {"code": "500001", "type": ..., "message": ...}}``;
- ``"flat"``: the platform's other envelope, with a top-level int ``code``,
  ``detail``, ``message`` holding the type name, and the ``error`` object;
- ``"html"``: a gateway's HTML error page;
- ``"empty"``: no body at all;
- ``"drop"``: the connection closes before any response;
- ``"drop_mid_body"``: a 200 whose body is cut off halfway.
- ``"reset"``: the connection is reset (TCP RST) before any response;
- ``"reset_after_headers"``: a 200's headers arrive, then the connection is reset;
- ``"truncated"``: a complete 200 (right ``Content-Length``) whose JSON stops halfway;
- ``"slow_body"``: a 200 model list whose second half comes ``latency`` seconds
  after the first (the latency is spent mid-body, not before the headers).
"""

Drop = Literal["drop", "drop_mid_body", "reset", "reset_after_headers"]
"""How the connection dies instead of carrying a whole reply."""

_KNOWN: dict[str, tuple[int, int | None, str]] = {
    "INCORRECT_API_KEY_PROVIDED": (401, 500004, "AppKey不正确,请使用正确的AppKey"),
    "INVOKE_MODEL_ERROR": (500, 500001, "服务接口异常,请联系管理员"),
    "invalid_api_key": (401, None, "Incorrect API key provided"),
    "rate_limit_exceeded": (429, None, "Rate limit reached, retry later"),
    "insufficient_quota": (429, None, "You exceeded your current quota"),
    "model_not_found": (404, None, "The model does not exist"),
    "invalid_request_error": (400, None, "Invalid request"),
    "server_error": (500, None, "The server had an error"),
}
_HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>"
)


@attrs.frozen
class Failure:
    """One scripted failure; see ``FakeWishub.fail``."""

    type: str | None = "INVOKE_MODEL_ERROR"
    status: int | None = None
    shape: Shape = "error"
    code: int | None = None
    message: str | None = None
    retry_after: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    latency: float = 0.0
    body: bytes | None = None

    def reply(self) -> Reply:
        """The reply this failure gives."""
        status, code, message = _KNOWN.get(self.type or "", (500, None, "error"))
        status = self.status or status
        code = self.code if self.code is not None else code
        message = self.message or message
        headers = {"content-type": "application/json", **self.headers}
        if self.retry_after is not None:
            headers["retry-after"] = self.retry_after
        if self.body is not None:
            return Reply(status, headers, self.body)
        if self.shape not in {"error", "flat"}:
            return self._broken_reply(status, headers)
        inner = {"code": None if code is None else str(code), "type": self.type, "message": message}
        envelope: dict[str, Any] = {"error": inner}
        if self.shape == "flat":
            envelope = {"code": code, "detail": message, "message": self.type, **envelope}
        return Reply(status, headers, dumps(envelope))

    def _broken_reply(self, status: int, headers: dict[str, str]) -> Reply:
        """The reply of a shape without an error envelope: a bad body or a bad connection."""
        if self.shape == "html":
            return Reply(status, {**headers, "content-type": "text/html"}, _HTML.encode())
        if self.shape == "empty":
            return Reply(status, {**headers, "content-type": "text/plain"}, b"")
        if self.shape in {"drop", "reset"}:
            return Reply(status, headers, b"", drop=self.shape)
        if self.shape in {"drop_mid_body", "reset_after_headers"}:
            return Reply(200, headers, b"", drop=self.shape)
        if self.shape == "truncated":
            return Reply(200, headers, CUT_BODY)
        return Reply(200, headers, _slow(dumps(model_list(DEFAULT_MODELS)), self.latency))


@attrs.define
class Reply:
    """What the fake answers: status, headers, body (bytes or chunks), or a drop."""

    status: int
    headers: dict[str, str]
    body: bytes | AsyncIterator[bytes]
    drop: Drop | None = None


JSON_HEADERS = {"content-type": "application/json"}


def json_reply(body: Any) -> Reply:
    """A 200 reply with ``body`` as JSON."""
    return Reply(200, dict(JSON_HEADERS), dumps(body))


def error_reply(**fields: Any) -> Reply:
    """The reply of a ``Failure`` with these fields (``type``, ``message``...)."""
    return Failure(**fields).reply()


def model_list(models: Iterable[str]) -> dict[str, Any]:
    data = [{"id": model, "object": "model", "created": "", "owned_by": ""} for model in models]
    return {"object": "list", "data": data}


async def _slow(body: bytes, pause: float) -> AsyncIterator[bytes]:
    """``body`` in two halves, ``pause`` seconds apart."""
    half = len(body) // 2
    yield body[:half]
    await anyio.sleep(pause)
    yield body[half:]


def dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()
