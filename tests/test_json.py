"""The hot path's JSON decoder: orjson when installed, json otherwise, same results."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

import wishub_async._json

BODIES = [
    b'{"object": "list", "data": [{"id": "\\u6d4b\\u8bd5", "created": 1700000000}]}',
    '{"data": [{"id": "测试模型名称1", "owned_by": null, "created": ""}]}'.encode(),
    b'{"usage": {"prompt_tokens": 3, "total_tokens": 5}, "x": [1.5, -2e3, true, false]}',
    b"[]",
]


def test_orjson_is_used_when_installed() -> None:
    orjson = pytest.importorskip("orjson")
    assert wishub_async._json.loads is orjson.loads


@pytest.mark.parametrize("body", BODIES)
def test_both_decoders_read_bodies_alike(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = wishub_async._json.loads(body)
    monkeypatch.setitem(sys.modules, "orjson", None)  # as if the extra were not installed
    plain = importlib.reload(wishub_async._json)
    try:
        assert plain.loads is json.loads
        assert plain.loads(body) == fast
    finally:
        monkeypatch.undo()
        importlib.reload(wishub_async._json)


@pytest.mark.parametrize("body", [b"", b"{", b"<html>", b'{"a": NaN}x'])
def test_both_decoders_refuse_what_is_not_json_with_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - either decoder's error is a ValueError
        wishub_async._json.loads(body)
    with pytest.raises(ValueError):  # noqa: PT011
        json.loads(body)
