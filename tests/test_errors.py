"""The error-type table and the reading of error bodies."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import pytest
import respx
from conftest import K1

from wishub_async import DEFAULT_ERROR_TABLE, AsyncWishub, ErrorRule, KeyEffect
from wishub_async._errors import api_error, parse_retry_after
from wishub_async._keys import KeyState
from wishub_async.exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)

BASE = "https://wishub.test/v1"

ROWS = [
    # type, status, class, same-key retry, key effect
    ("INCORRECT_API_KEY_PROVIDED", 401, AuthenticationError, False, KeyState.QUARANTINED),
    ("invalid_api_key", 401, AuthenticationError, False, KeyState.QUARANTINED),
    (None, 401, AuthenticationError, False, KeyState.QUARANTINED),
    ("INVOKE_MODEL_ERROR", 500, ServerError, True, KeyState.HEALTHY),
    ("server_error", 500, ServerError, True, KeyState.HEALTHY),
    (None, 500, ServerError, True, KeyState.HEALTHY),
    (None, 502, ServerError, True, KeyState.HEALTHY),
    (None, 503, ServerError, True, KeyState.HEALTHY),
    (None, 504, ServerError, True, KeyState.HEALTHY),
    (None, 408, ServerError, True, KeyState.HEALTHY),
    ("rate_limit_exceeded", 429, RateLimitError, True, KeyState.COOLING),
    (None, 429, RateLimitError, True, KeyState.COOLING),
    ("insufficient_quota", 429, QuotaExceededError, False, KeyState.COOLING),
    ("model_not_found", 404, NotFoundError, False, KeyState.HEALTHY),
    (None, 404, NotFoundError, False, KeyState.HEALTHY),
    ("invalid_request_error", 400, BadRequestError, False, KeyState.HEALTHY),
    (None, 400, BadRequestError, False, KeyState.HEALTHY),
    (None, 422, BadRequestError, False, KeyState.HEALTHY),
    (None, 403, PermissionDeniedError, False, KeyState.HEALTHY),
]


def body(error_type: str | None) -> dict[str, Any]:
    return {"error": {"code": "500001", "type": error_type, "message": "boom"}}


@pytest.mark.asyncio
@pytest.mark.parametrize(("error_type", "status", "cls", "retried", "state"), ROWS)
@respx.mock(base_url=BASE)
async def test_every_row_of_the_type_table(  # noqa: PLR0917 - one argument per table column
    respx_mock: respx.MockRouter,
    error_type: str | None,
    status: int,
    cls: type[APIError],
    retried: bool,
    state: KeyState,
) -> None:
    route = respx_mock.get("/models").respond(status, json=body(error_type))
    async with AsyncWishub(app_key=K1, base_url=BASE) as wh:
        with pytest.raises(cls) as caught:
            await wh.models.list()
        assert type(caught.value) is cls
        assert caught.value.status_code == status
        assert caught.value.type == error_type
        assert route.call_count == (3 if retried else 1)
        # Three server errors in a row also cool a key briefly.
        expected = KeyState.COOLING if retried and state is KeyState.HEALTHY else state
        assert wh.key_status()[0].state is expected


def test_type_wins_over_status() -> None:
    error = api_error(
        500, {}, b'{"error": {"type": "insufficient_quota"}}', label=None, table=DEFAULT_ERROR_TABLE
    )
    assert type(error) is QuotaExceededError


def test_unknown_types_fall_back_to_the_status_then_its_family() -> None:
    def cls(status: int) -> type[APIError]:
        raw = b'{"error": {"type": "SOMETHING_NEW", "message": "x"}}'
        return type(api_error(status, {}, raw, label=None, table=DEFAULT_ERROR_TABLE))

    assert cls(429) is RateLimitError
    assert cls(599) is ServerError
    assert cls(418) is APIError
    assert cls(302) is APIError


def test_users_extend_the_table() -> None:
    table = DEFAULT_ERROR_TABLE.with_types(
        {"MODEL_BUSY": ErrorRule(ServerError, retry=True, key_effect=KeyEffect.COOL)}
    ).with_statuses({418: ErrorRule(BadRequestError, retry=False)})
    busy = api_error(400, {}, b'{"error": {"type": "MODEL_BUSY"}}', label=None, table=table)
    assert type(busy) is ServerError
    assert table.rule_for("MODEL_BUSY", 400).key_scoped
    assert type(api_error(418, {}, b"{}", label=None, table=table)) is BadRequestError
    assert "MODEL_BUSY" not in DEFAULT_ERROR_TABLE.types  # the default is untouched
    with pytest.raises(TypeError):
        table.types["X"] = table.types["MODEL_BUSY"]  # type: ignore[index]


def test_the_flat_envelope_with_its_quirks() -> None:
    raw = (
        '{"code": 500004, "detail": "AppKey不正确,请使用正确的AppKey",'
        ' "message": "INCORRECT_API_KEY_PROVIDED",'
        ' "error": {"code": "500004", "message": "AppKey不正确,请使用正确的AppKey",'
        ' "type": "INCORRECT_API_KEY_PROVIDED"}}'
    ).encode()
    error = api_error(
        401, {"x-request-id": "req-1"}, raw, label="team-a", table=DEFAULT_ERROR_TABLE
    )
    assert type(error) is AuthenticationError
    assert (error.type, error.code, error.message) == (
        "INCORRECT_API_KEY_PROVIDED",
        500004,
        "AppKey不正确,请使用正确的AppKey",
    )
    assert error.request_id == "req-1"
    assert error.key == "team-a"
    assert error.body["code"] == 500004
    assert str(error) == (
        "HTTP 401 INCORRECT_API_KEY_PROVIDED (code 500004): AppKey不正确,请使用正确的AppKey"
        " [key=team-a, request_id=req-1]"
    )


def test_the_nested_envelope() -> None:
    raw = '{"error": {"code": "500001", "type": "INVOKE_MODEL_ERROR", "message": "服务接口异常"}}'
    error = api_error(500, {}, raw.encode(), label=None, table=DEFAULT_ERROR_TABLE)
    assert type(error) is ServerError
    assert (error.type, error.code, error.message) == ("INVOKE_MODEL_ERROR", 500001, "服务接口异常")


@pytest.mark.parametrize(
    ("raw", "error_type", "code", "message", "param"),
    [
        # Only the top level: the type name sits in `message`, the text in `detail`.
        (
            b'{"code": 500004, "message": "INCORRECT_API_KEY_PROVIDED", "detail": "bad key"}',
            "INCORRECT_API_KEY_PROVIDED",
            500004,
            "bad key",
            None,
        ),
        # A plain-English top-level message is a message, not a type.
        (b'{"message": "Too many requests"}', None, None, "Too many requests", None),
        (b'{"error": "nope"}', None, None, "nope", None),
        (
            b'{"error": {"type": "invalid_request_error", "param": "messages"}}',
            "invalid_request_error",
            None,
            "invalid_request_error",
            "messages",
        ),
        (
            b'{"detail": [{"loc": ["body", "model"], "msg": "field required"}]}',
            None,
            None,
            '[{"loc": ["body", "model"], "msg": "field required"}]',
            None,
        ),
        (b'{"error": {"code": "abc", "type": "X_Y"}}', "X_Y", None, "X_Y", None),
        (b'{"error": {"code": true, "type": "X"}, "code": "42"}', "X", 42, "X", None),
    ],
)
def test_envelope_variants(
    raw: bytes, error_type: str | None, code: int | None, message: str, param: str | None
) -> None:
    error = api_error(400, {}, raw, label=None, table=DEFAULT_ERROR_TABLE)
    assert (error.type, error.code, error.message, error.param) == (
        error_type,
        code,
        message,
        param,
    )


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (
            b"<html><title>502 Bad Gateway</title></html>",
            "text/html; charset=utf-8",
            "non-JSON error body (text/html): <html><title>502 Bad Gateway</title></html>",
        ),
        (b"", "text/plain", "empty error body (text/plain)"),
        (b"   \n", "text/plain", "empty error body (text/plain)"),
        (
            b"upstream connect error",
            "text/plain",
            "non-JSON error body (text/plain): upstream connect error",
        ),
        (b"[1, 2]", "application/json", "non-JSON error body (application/json): [1, 2]"),
        (b"\xff\xfe", "application/octet-stream", "non-JSON error body"),
    ],
)
def test_non_json_error_bodies_keep_status_and_an_excerpt(
    raw: bytes, content_type: str, expected: str
) -> None:
    error = api_error(
        502, {"content-type": content_type}, raw, label=None, table=DEFAULT_ERROR_TABLE
    )
    assert type(error) is ServerError
    assert error.status_code == 502
    assert error.message.startswith(expected)


def test_a_huge_html_page_is_cut_to_a_short_excerpt() -> None:
    raw = b"<html>" + b"x" * 100_000 + b"</html>"
    error = api_error(
        503, {"content-type": "text/html"}, raw, label=None, table=DEFAULT_ERROR_TABLE
    )
    assert len(str(error)) < 300
    assert error.body == raw.decode()  # the raw body is kept


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "250ms"}, 0.25),
        ({"retry-after-ms": "1200"}, 1.2),
        ({"retry-after-ms": "1200", "retry-after": "9"}, 1.2),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None
    assert 25 <= seconds <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_errors_carry_retry_after_and_should_retry() -> None:
    error = api_error(
        429,
        {"retry-after": "2", "x-should-retry": "false"},
        b"{}",
        label=None,
        table=DEFAULT_ERROR_TABLE,
    )
    assert error.retry_after == 2.0
    assert error.should_retry is False


def test_errors_pickle_with_their_fields() -> None:
    import pickle  # noqa: PLC0415

    error = api_error(
        401,
        {},
        b'{"error": {"type": "invalid_api_key", "message": "m"}}',
        label="k",
        table=DEFAULT_ERROR_TABLE,
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(copy) is AuthenticationError
    assert (copy.status_code, copy.type, copy.label, str(copy)) == (
        401,
        "invalid_api_key",
        "k",
        str(error),
    )


def test_the_default_client_uses_the_default_table() -> None:
    assert AsyncWishub(app_key="k" * 32)._options.error_table is DEFAULT_ERROR_TABLE


def test_a_redirect_names_where_it_pointed() -> None:
    error = api_error(
        301,
        {"location": "https://elsewhere.example/v1/models"},
        b"",
        label=None,
        table=DEFAULT_ERROR_TABLE,
    )
    assert type(error) is APIError
    assert error.message == (
        "redirect to https://elsewhere.example/v1/models not followed; check base_url"
    )


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        # What OpenAI-compatible servers send: a broad type, the real error in `code`.
        (401, {"type": "invalid_request_error", "code": "invalid_api_key"}, AuthenticationError),
        (404, {"type": "invalid_request_error", "code": "model_not_found"}, NotFoundError),
        (429, {"type": "requests", "code": "rate_limit_exceeded"}, RateLimitError),
        (429, {"type": "insufficient_quota", "code": "insufficient_quota"}, QuotaExceededError),
        (401, {"type": "invalid_request_error", "code": None}, AuthenticationError),
        (400, {"type": "invalid_request_error", "code": None}, BadRequestError),
        (418, {"type": "invalid_request_error"}, BadRequestError),
        (
            400,
            {"type": "invalid_request_error", "code": "context_length_exceeded"},
            BadRequestError,
        ),
    ],
)
def test_openai_shaped_errors_are_classified_by_code_then_status(
    status: int, error: dict[str, Any], cls: type[APIError]
) -> None:
    raw = json.dumps({"error": {"message": "m", "param": None, **error}}).encode()
    built = api_error(status, {}, raw, label=None, table=DEFAULT_ERROR_TABLE)
    assert type(built) is cls
    assert built.rule is DEFAULT_ERROR_TABLE.rule_for(error["type"], status, error.get("code"))
    assert built.type == error["type"]


@pytest.mark.asyncio
@respx.mock(base_url=BASE)
async def test_an_openai_style_401_quarantines_the_key(respx_mock: respx.MockRouter) -> None:
    body = {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    route = respx_mock.get("/models").respond(401, json=body)
    async with AsyncWishub(app_key=K1, base_url=BASE) as wh:
        with pytest.raises(AuthenticationError):
            await wh.models.list()
        assert wh.key_status()[0].state is KeyState.QUARANTINED
    assert route.call_count == 1
