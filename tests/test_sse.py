from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wishub_async._sse import DONE, SSEDecoder, decode_payload
from wishub_async.exceptions import ResponseValidationError


def parse(*pieces: bytes) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def values(*pieces: bytes) -> list[object]:
    return [value for payload in parse(*pieces) for value in decode_payload(payload)]


CHUNK = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "你好, wörld 🌏"}}]}
BODY = (
    b": keep-alive\n"
    b"event: message\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b"data:" + json.dumps(CHUNK, ensure_ascii=False).encode() + b"\r\n\r\n"
    b'data: {"id":"c2"}\r\r'
    b'{"id":"c3"}\n'
    b"\n\n\n"
    b"data:[DONE]\n\n"
)
EXPECTED = [CHUNK, {"id": "c2"}, {"id": "c3"}, DONE]


def test_platform_quirk_data_without_space() -> None:
    assert values(b'data:{"a":1}\n\n') == [{"a": 1}]


def test_data_with_space_and_tab_kept_after_first_space() -> None:
    assert parse(b"data: x\n\n", b"data:  y\n\n") == ["x", " y"]


def test_comments_event_id_retry_and_unknown_fields_are_ignored() -> None:
    assert values(BODY) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    body = b'data:{"a":1}' + newline * 2 + b'data:{"a":2}' + newline * 2
    assert values(body) == [{"a": 1}, {"a": 2}]


def test_chunk_boundaries_anywhere_give_the_same_events() -> None:
    for cut in range(len(BODY) + 1):
        assert values(BODY[:cut], BODY[cut:]) == EXPECTED, cut
    assert values(*(BODY[i : i + 1] for i in range(len(BODY)))) == EXPECTED


def test_crlf_split_between_cr_and_lf() -> None:
    assert parse(b"data:a\r", b"\ndata:b\r", b"\n\r", b"\n") == ["a\nb"]


def test_missing_done_and_missing_final_blank_line() -> None:
    assert values(b'data:{"a":1}\n\ndata:{"a":2}') == [{"a": 1}, {"a": 2}]


def test_done_is_optional_and_recognised_with_or_without_space() -> None:
    assert values(b"data:[DONE]\n\n") == [DONE]
    assert values(b"data: [DONE]\n\n") == [DONE]
    assert values(b"[DONE]\n") == [DONE]


def test_bare_json_lines_are_events() -> None:
    assert values(b'{"a":1}\n{"a":2}\n') == [{"a": 1}, {"a": 2}]


def test_data_lines_without_blank_line_between_values() -> None:
    assert values(b'data:{"a":1}\ndata:{"a":2}\n\n') == [{"a": 1}, {"a": 2}]


def test_one_json_value_over_several_data_lines() -> None:
    assert values(b'data:{"a":\ndata: [1,\ndata: 2]}\n\n') == [{"a": [1, 2]}]


def test_leading_bom_is_dropped() -> None:
    assert values(b'\xef\xbb\xbfdata:{"a":1}\n\n') == [{"a": 1}]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert values(b'data:{"a":"\xff"}\n\n') == [{"a": "\ufffd"}]


def test_field_without_colon_and_empty_data() -> None:
    assert parse(b"data\n\ndata:\n\n") == ["", ""]
    assert decode_payload("") == []


def test_payload_that_is_not_json_raises_our_error() -> None:
    with pytest.raises(ResponseValidationError, match="not JSON"):
        decode_payload('{"a": 1} oops')
    with pytest.raises(ResponseValidationError):
        decode_payload("[" * 100_000)


def test_huge_line_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=10)
    with pytest.raises(ResponseValidationError, match="larger than"):
        decoder.feed(b"data:" + b"x" * 20)
    decoder = SSEDecoder(max_event_bytes=10)
    with pytest.raises(ResponseValidationError, match="larger than"):
        decoder.feed(b"data:123456\ndata:123456\n")


def test_empty_feed_keeps_pending_cr() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data:a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\n") == ["a"]


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_arbitrary_bytes_only_raise_our_errors(body: bytes, cuts: list[int]) -> None:
    decoder = SSEDecoder(max_event_bytes=200)
    points = sorted({0, len(body), *(min(cut, len(body)) for cut in cuts)})
    try:
        payloads = [
            payload
            for start, end in itertools.pairwise(points)
            for payload in decoder.feed(body[start:end])
        ]
        payloads += decoder.close()
        for payload in payloads:
            decode_payload(payload)
    except ResponseValidationError:
        pass


events = st.lists(
    st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3), min_size=1, max_size=5
)


@given(events, st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans(), st.data())
def test_any_split_of_a_valid_stream_gives_the_same_values(
    chunks: list[dict[str, str]], newline: bytes, done: bool, data: st.DataObject
) -> None:
    body = b"".join(
        b"data:" + json.dumps(chunk, ensure_ascii=False).encode() + newline * 2 for chunk in chunks
    ) + (b"data:[DONE]" + newline * 2 if done else b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert values(*pieces) == [*chunks, *([DONE] if done else [])]
