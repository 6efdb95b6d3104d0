"""FakeWishub itself: what users of the testing helpers rely on."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import K1, K2, WRONG

from wishub_async import AsyncWishub
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

HEADERS = {"authorization": f"Bearer {K1}"}


async def raw(fake: FakeWishub, key: str | None = K1, path: str = "/v1/models") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=fake, base_url="https://wishub.fake") as client:
        return await client.get(path, headers=headers)


@pytest.mark.anyio
async def test_models_are_per_key_and_shaped_like_the_platform() -> None:
    fake = FakeWishub({K1: ["a", "b"], K2: ["c"]})
    body = (await raw(fake)).json()
    assert body == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": "", "owned_by": ""},
            {"id": "b", "object": "model", "created": "", "owned_by": ""},
        ],
    }
    assert [m["id"] for m in (await raw(fake, K2)).json()["data"]] == ["c"]


@pytest.mark.anyio
async def test_a_wrong_or_missing_key_gets_the_500004_envelope() -> None:
    fake = FakeWishub([K1])
    for key in (WRONG, None):
        reply = await raw(fake, key)
        assert reply.status_code == 401
        assert reply.json() == {
            "code": 500004,
            "detail": "AppKey不正确,请使用正确的AppKey",
            "message": "INCORRECT_API_KEY_PROVIDED",
            "error": {
                "code": "500004",
                "message": "AppKey不正确,请使用正确的AppKey",
                "type": "INCORRECT_API_KEY_PROVIDED",
            },
        }


@pytest.mark.anyio
async def test_without_keys_any_key_is_accepted() -> None:
    fake = FakeWishub()
    assert [m["id"] for m in (await raw(fake, WRONG)).json()["data"]] == list(DEFAULT_MODELS)
    fake.add_key(K1, ["only"])
    assert [m["id"] for m in (await raw(fake)).json()["data"]] == ["only"]


@pytest.mark.anyio
async def test_scripts_run_in_order_key_specific_first() -> None:
    fake = FakeWishub([K1, K2])
    fake.fail(type="server_error", times=1)
    fake.fail(K1, type="rate_limit_exceeded", retry_after="3", times=2)
    statuses = [(await raw(fake)).status_code for _ in range(4)]
    assert statuses == [429, 429, 500, 200]
    assert (await raw(fake, K2)).status_code == 200


@pytest.mark.anyio
async def test_scripted_shapes() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="INVOKE_MODEL_ERROR", shape="flat")
    flat = (await raw(fake)).json()
    assert (flat["code"], flat["message"], flat["error"]["code"]) == (
        500001,
        "INVOKE_MODEL_ERROR",
        "500001",
    )
    fake.fail(K1, shape="html", status=502)
    html = await raw(fake)
    assert (html.status_code, html.headers["content-type"]) == (502, "text/html")
    assert html.text.startswith("<html>")
    fake.fail(K1, shape="empty", status=503)
    assert (await raw(fake)).content == b""
    fake.fail(K1, body=b"custom", status=418, headers={"x-request-id": "r-1"})
    custom = await raw(fake)
    assert (custom.status_code, custom.content, custom.headers["x-request-id"]) == (
        418,
        b"custom",
        "r-1",
    )
    fake.fail(K1, shape="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await raw(fake)


@pytest.mark.anyio
async def test_the_request_log_counts_and_redacts() -> None:
    fake = FakeWishub([K1])
    await raw(fake)
    await raw(fake, WRONG)
    await raw(fake, path="/v1/nowhere")
    assert fake.count() == 3
    assert fake.count(K1) == 2
    assert fake.count(path="/v1/models") == 2
    assert [r.status for r in fake.requests] == [200, 401, 404]
    assert K1 not in repr(fake.requests) + repr(fake)
    assert "authorization" not in fake.requests[0].headers


@pytest.mark.anyio
async def test_the_served_fake_answers_the_same_over_http() -> None:
    fake = FakeWishub({K1: ["a"]})
    fake.fail(K1, type="rate_limit_exceeded", retry_after="1")
    async with fake.serve() as base_url, httpx.AsyncClient() as client:
        limited = await client.get(f"{base_url}/models", headers=HEADERS)
        ok = await client.get(f"{base_url}/models", headers=HEADERS)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert json.loads(ok.content)["data"][0]["id"] == "a"
    assert base_url.startswith("http://127.0.0.1:")


def test_client_refuses_a_base_url_it_would_ignore() -> None:
    with pytest.raises(TypeError, match="in-process"):
        FakeWishub().client(app_key=K1, base_url="http://127.0.0.1:1/v1")


@pytest.mark.anyio
async def test_the_sdk_against_both_mounts() -> None:
    fake = FakeWishub({K1: ["a"]})
    async with fake.client(app_key=K1) as wh:
        assert (await wh.models.list()).ids == ["a"]
    async with fake.serve() as base_url, AsyncWishub(app_key=K1, base_url=base_url) as wh:
        assert (await wh.models.list()).ids == ["a"]
    assert fake.count(K1) == 2
