"""The model list: parsing, quirks included, through the one converter."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import respx
from conftest import K1, models_body

from wishub_async import AsyncWishub
from wishub_async._converter import parse_created, structure_json
from wishub_async.exceptions import ResponseValidationError
from wishub_async.models import Model, ModelList

BASE = "https://wishub.test/v1"


def parse(body: Any) -> ModelList:
    return structure_json(json.dumps(body, ensure_ascii=False).encode(), ModelList)


def test_the_documented_example_parses() -> None:
    models = parse(
        {
            "object": "list",
            "data": [{"id": "测试模型名称1", "object": "model", "created": "", "owned_by": ""}],
        }
    )
    assert models == ModelList(data=(Model(id="测试模型名称1"),))
    assert models.object == "list"
    assert [m.id for m in models] == ["测试模型名称1"]
    assert len(models) == 1
    assert models.ids == ["测试模型名称1"]


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("", None),
        (None, None),
        ("   ", None),
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1700000000.5, datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T16:00:00+08:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01 08:00:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("yesterday", None),
        (True, None),
        (10**20, None),
        (1700000000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # milliseconds
        ("1700000000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ([], None),
    ],
)
def test_created_is_lenient(created: Any, expected: datetime | None) -> None:
    assert parse_created(created) == expected
    assert parse(models_body("m", created=created)).data[0].created == expected


def test_created_read_again_from_a_repeated_list_is_the_same() -> None:
    body = {"data": [{"id": "a", "created": 1}, {"id": "b", "created": True}]}
    for _ in range(2):  # the second read finds 1 already read: True must not match it
        first, second = parse(body).data
        assert first.created == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
        assert second.created is None


def test_missing_created_and_owned_by_take_defaults() -> None:
    model = parse({"data": [{"id": "m"}]}).data[0]
    assert (model.created, model.owned_by, model.object) == (None, "", "model")


def test_null_counts_as_absent_for_fields_with_defaults() -> None:
    models = parse({"object": None, "data": [{"id": "m", "owned_by": None, "object": None}]})
    assert models.object == "list"
    assert (models.data[0].owned_by, models.data[0].object) == ("", "model")


def test_unknown_fields_are_ignored() -> None:
    body = models_body("m", permission=[{"allow": True}], root="m", parent=None)
    body["has_more"] = False
    assert parse(body).ids == ["m"]


def test_non_ascii_and_odd_ids_survive_intact() -> None:
    ids = ["测试模型名称1", "DeepSeek-R1 (深度求索)", "emoji-🙂", "a" * 300]
    assert parse(models_body(*ids)).ids == ids


def test_an_empty_list_is_fine() -> None:
    assert len(parse({"object": "list", "data": []})) == 0
    assert len(parse({})) == 0


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"data": [{"id": 7}]}, "$.data[0].id"),
        ({"data": [{"id": "ok"}, {"id": None}]}, "$.data[1].id"),
        ({"data": [{"object": "model"}]}, "$.data[0].id"),
        ({"data": [{"id": "m", "owned_by": 3}]}, "$.data[0].owned_by"),
        ({"data": "m1,m2"}, "$.data"),
        ({"data": {"id": "m"}}, "$.data"),
        ({"data": ["m"]}, "$.data[0]"),
        ([{"id": "m"}], "$"),
        ("list", "$"),
    ],
)
def test_a_body_that_does_not_fit_names_the_bad_path(body: Any, path: str) -> None:
    with pytest.raises(ResponseValidationError) as caught:
        parse(body)
    assert caught.value.path == path
    assert path in str(caught.value)
    assert "ModelList" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "expected a JSON body, got an empty body"),
        (b"<html>oops</html>", "expected a JSON body, got: <html>oops</html>"),
        (b'{"object": "list", "data": [', "expected a JSON body, got: {"),
    ],
)
def test_a_2xx_body_that_is_not_json(content: bytes, expected: str) -> None:
    with pytest.raises(ResponseValidationError) as caught:
        structure_json(content, ModelList)
    assert str(caught.value).startswith(expected)
    assert caught.value.path == "$"


@pytest.mark.asyncio
@respx.mock(base_url=BASE)
async def test_a_bad_2xx_body_leaves_the_client_usable(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/models")
    route.side_effect = [
        respx.MockResponse(200, text="<html>maintenance</html>"),
        respx.MockResponse(200, json=models_body("m")),
    ]
    async with AsyncWishub(app_key=K1, base_url=BASE) as wh:
        with pytest.raises(ResponseValidationError, match="maintenance"):
            await wh.models.list()
        assert (await wh.models.list()).ids == ["m"]
    assert route.call_count == 2  # a malformed success is not retried


def test_models_are_frozen() -> None:
    model = Model(id="m")
    with pytest.raises(AttributeError):
        model.id = "x"  # type: ignore[misc]
