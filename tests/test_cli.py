"""The `wishub` command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import anyio.from_thread
import pytest
from conftest import K1, K2, WRONG

from wishub_async._cli import DEMO_KEY, main
from wishub_async.testing import FakeWishub


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def served() -> Iterator[tuple[FakeWishub, str]]:
    """A fake on a real loopback port, served from a background thread."""
    fake = FakeWishub({K1: ["m-1", "模型-2"], K2: ["m-3"]})
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(fake.serve()) as base_url,
    ):
        yield fake, base_url


def test_demo_lists_the_fakes_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--demo")
    assert code == 0
    assert out.splitlines() == [
        "4bd107bff85941239e27b1509eccfe98",
        "9dc913a037774fc0b248376905c85da5",
        "测试模型名称1",
    ]
    assert err == ""


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--demo", "--json")
    data = json.loads(out)
    assert code == 0
    assert data[0]["ok"] is True
    assert data[0]["key"] == "…" + DEMO_KEY[-4:]
    assert [m["id"] for m in data[0]["models"]][-1] == "测试模型名称1"


def test_a_wrong_key_prints_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--demo", "--app-key", WRONG)
    assert code == 1
    assert out == ""
    assert err.strip() == (
        "wishub: AuthenticationError: HTTP 401 INCORRECT_API_KEY_PROVIDED (code 500004):"
        " AppKey不正确,请使用正确的AppKey [key=key-0]"
    )
    assert WRONG not in err


def test_several_keys_give_sections_and_a_summary(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str]
) -> None:
    fake, base_url = served
    code, out, err = run(
        capsys,
        "models",
        "--base-url",
        base_url,
        "--app-key",
        K1,
        "--app-key",
        WRONG,
        "--app-key",
        K2,
    )
    assert code == 1
    assert out.splitlines() == [
        "[key-0] …" + K1[-4:],
        "  m-1",
        "  模型-2",
        "[key-1] …" + WRONG[-4:],
        "[key-2] …" + K2[-4:],
        "  m-3",
        "2 ok, 1 failed",
    ]
    assert "AuthenticationError" in err
    assert "[key=key-1]" in err
    assert fake.count(WRONG) == 1
    for secret in (K1, K2, WRONG):
        assert secret not in out + err


def test_the_key_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    served: tuple[FakeWishub, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, base_url = served
    monkeypatch.setenv("WISHUB_APP_KEY", K2)
    monkeypatch.setenv("WISHUB_BASE_URL", base_url)
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    assert json.loads(out)[0]["models"][0]["id"] == "m-3"
    assert fake.count(K2) == 1


def test_no_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WISHUB_APP_KEY", raising=False)
    code, out, err = run(capsys, "models")
    assert code == 2
    assert out == ""
    assert "no AppKey" in err
    assert "--demo" in err


def test_a_malformed_key_is_a_usage_error_and_not_echoed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "models", "--app-key", "abc def ghi jkl")
    assert code == 2
    assert "whitespace" in err
    assert "abc def" not in err


def test_plain_http_to_a_remote_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models", "--app-key", K1, "--base-url", "http://example.com/v1")
    assert code == 2
    assert "plain http" in err


def test_a_network_failure_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket closes
    code, _, err = run(
        capsys, "models", "--app-key", K1, "--base-url", f"http://127.0.0.1:{port}/v1"
    )
    assert code == 1
    assert "APIConnectionError: connection failed (ConnectError)" in err


@pytest.mark.parametrize("argv", [[], ["models", "--bogus"], ["nope"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


def test_help_shows_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", "--help"])
    out = capsys.readouterr().out
    assert "wishub models --demo" in out
    assert "exit codes" in out


def test_python_dash_m_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wishub_async", "models", "--demo"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    assert "测试模型名称1" in done.stdout
