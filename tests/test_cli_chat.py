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


def test_rate_budget_options_and_the_budget_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "hi", "--demo", "--rpm", "5", "--tpm", "10000", "--budgets"]) == 0
    out, err = capsys.readouterr()
    assert "You said: hi" in out
    header, row = err.strip().splitlines()[-2:]
    assert header.split() == ["LABEL", "MODEL", "BUDGET", "REQUESTS", "TOKENS", "FREE", "WAITING"]
    assert "5 req + 10000 tok per 60s" in row
    assert row.split()[0] == "key-0"


def test_without_limits_the_table_shows_the_adaptive_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chat", "hi", "--demo", "--budgets"]) == 0
    assert "adaptive" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_rate_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["chat", "hi", "--demo", "--rpm", value])
    assert exit_.value.code == 2
    assert "--rpm" in capsys.readouterr().err


def test_published_limits_from_the_command_line() -> None:
    from wishub_async._cli import _parser  # noqa: PLC0415
    from wishub_async._cli.common import limits_from  # noqa: PLC0415

    args = _parser().parse_args(["chat", "hi", "--published-limits", "--rpm", "7"])
    limits = limits_from(args)
    assert limits is not None
    assert limits["DeepSeek-V4-Flash"].requests == 250
    assert limits["*"].requests == 7
    assert limits_from(_parser().parse_args(["chat", "hi"])) is None
