from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from wishub_async import AsyncWishub
from wishub_async._converter import decode_vector, structure
from wishub_async.exceptions import (
    AuthenticationError,
    ResponseValidationError,
    ServerError,
)
from wishub_async.models import EmbeddingList
from wishub_async.testing import DEFAULT_MODELS, FakeWishub
from wishub_async.testing._chat import vector

KEY = "0123456789abcdef0123456789abcdef"
MODEL = DEFAULT_MODELS[1]


@pytest.fixture
def fake() -> FakeWishub:
    return FakeWishub([KEY])


def f32(values: list[float]) -> tuple[float, ...]:
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["embeddings", "embedding"])
async def test_vectors_from_the_platform_plural_or_openai_singular(
    fake: FakeWishub, field: Any
) -> None:
    fake.embeddings.field = field
    async with fake.client(app_key=KEY) as wh:
        result = await wh.embeddings.create(model=MODEL, input=["a", "b"])
    assert len(result) == 2
    assert result.model == MODEL
    assert [item.index for item in result] == [0, 1]
    assert result.vectors == [tuple(vector('"a"', 8)), tuple(vector('"b"', 8))]
    assert result.usage is not None
    assert result.usage.prompt_tokens == 2


@pytest.mark.anyio
async def test_base64_vectors_are_decoded_little_endian_float32(fake: FakeWishub) -> None:
    async with fake.client(app_key=KEY) as wh:
        plain = await wh.embeddings.create(model=MODEL, input="text")
        packed = await wh.embeddings.create(model=MODEL, input="text", encoding_format="base64")
    assert fake.requests[-1].json["encoding_format"] == "base64"
    assert "encoding_format" not in fake.requests[-2].json
    assert packed.vectors[0] == f32(list(plain.vectors[0]))
    assert all(isinstance(value, float) for value in packed.vectors[0])


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("one", "one"),
        (["a", "b"], ["a", "b"]),
        (("a", "b"), ["a", "b"]),
        ([1, 2, 3], [1, 2, 3]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
@pytest.mark.anyio
async def test_input_shapes_and_optional_params(fake: FakeWishub, given: Any, sent: Any) -> None:
    async with fake.client(app_key=KEY) as wh:
        result = await wh.embeddings.create(
            model=MODEL, input=given, dimensions=4, user="u", extra_body={"x": 1}
        )
    assert fake.requests[-1].json == {
        "model": MODEL,
        "input": sent,
        "dimensions": 4,
        "user": "u",
        "x": 1,
    }
    assert all(len(item.embedding) == 4 for item in result)


@pytest.mark.anyio
async def test_error_envelope_inside_a_200(fake: FakeWishub) -> None:
    body = b'{"error": {"code": "500001", "type": "INVOKE_MODEL_ERROR", "message": "x"}}'
    fake.fail(status=200, body=body, times=3)
    async with fake.client(app_key=KEY) as wh:
        with pytest.raises(ServerError) as caught:
            await wh.embeddings.create(model=MODEL, input="a")
    assert caught.value.status_code == 200
    assert fake.count(path="/v1/embeddings") == 3


@pytest.mark.anyio
async def test_fan_out_embeddings_with_a_wrong_key(fake: FakeWishub) -> None:
    async def embed(wh: AsyncWishub) -> int:
        return len(await wh.embeddings.create(model=MODEL, input=["a", "b", "c"]))

    async with fake.client(app_keys={"good": KEY, "bad": "b" * 32}) as wh:
        outcomes = await wh.fan_out(embed)
        states = {status.label: status.state for status in wh.key_status()}
    assert outcomes[0].value == 3
    assert isinstance(outcomes[1].error, AuthenticationError)
    assert states == {"good": "healthy", "bad": "quarantined"}


def test_vectors_are_sorted_by_index() -> None:
    result = structure(
        {"data": [{"index": 1, "embeddings": [2.0]}, {"index": 0, "embeddings": [1]}]},
        EmbeddingList,
    )
    assert result.vectors == [(1.0,), (2.0,)]


def test_singular_field_wins_unless_null() -> None:
    both = {"data": [{"embedding": [1.0], "embeddings": [2.0]}]}
    assert structure(both, EmbeddingList).vectors == [(1.0,)]
    null = {"data": [{"embedding": None, "embeddings": [2.0]}]}
    assert structure(null, EmbeddingList).vectors == [(2.0,)]


@pytest.mark.parametrize(
    ("vector_value", "problem"),
    [
        ("not base64!", "base64"),
        (base64.b64encode(b"123").decode(), "multiple of 4"),
        ([1.0, "2"], "number"),
        ([1.0, True], "number"),
        ({"x": 1}, "array"),
    ],
)
def test_bad_vectors_name_the_field(vector_value: Any, problem: str) -> None:
    with pytest.raises(ResponseValidationError) as caught:
        structure({"data": [{"embeddings": vector_value}]}, EmbeddingList)
    assert caught.value.path == "$.data[0].embedding"
    with pytest.raises((TypeError, ValueError), match=problem):
        decode_vector(vector_value)
