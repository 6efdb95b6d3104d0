from __future__ import annotations

import json

import pytest

from wishub_async._cli import main


def test_chat_demo_whole_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "Hello there", "--demo"]) == 0
    assert capsys.readouterr().out == "You said: Hello there\n"


def test_chat_demo_stream_prints_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "Hello there", "--demo", "--stream", "--system", "be brief"]) == 0
    assert capsys.readouterr().out == "You said: Hello there\n"


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_chat_demo_json(capsys: pytest.CaptureFixture[str], stream: list[str]) -> None:
    assert main(["chat", "Hi", "--demo", "--json", "--max-tokens", "5", *stream]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["content"] == "You said: Hi"
    assert answer["finish_reason"] == "stop"
    assert answer["usage"]["total_tokens"] == 4


def test_chat_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "Hi", "--demo", "--model", "nope"]) == 1
    assert "NotFoundError" in capsys.readouterr().err
    assert main(["chat", "Hi", "--demo", "--app-key", "w" * 32, "--stream"]) == 1
    err = capsys.readouterr().err
    assert "AuthenticationError" in err
    assert "w" * 32 not in err


def test_chat_needs_a_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WISHUB_APP_KEY", "k" * 32)
    assert main(["chat", "Hi"]) == 2
    assert "--model" in capsys.readouterr().err
