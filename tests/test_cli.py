"""The `wishub` command."""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
from conftest import K1, K2, WRONG

from wishub_async._cli import DEMO_KEY, PROGRESS_MIN_KEYS, _parser, main
from wishub_async._cli.support import Progress, labelled_keys, read_keys_file, table
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
    assert data[0]["state"] == "healthy"
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


def test_several_keys_with_long_give_sections_and_a_summary(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str]
) -> None:
    fake, base_url = served
    code, out, err = run(
        capsys,
        "models",
        "--long",
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
    assert "--keys-file keys.txt" in out
    assert "LABEL=KEY" in out
    assert "exit codes" in out
    assert "130  interrupted" in out


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


# -- several keys: the table, keys files, progress -----------------------------------


def test_several_keys_give_a_table_and_a_summary(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str]
) -> None:
    _, base_url = served
    argv = ["models", "--base-url", base_url, "--app-key", K1, "--app-key", WRONG, "--app-key", K2]
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out.splitlines() == [
        "LABEL  KEY    STATE        MODELS  ERROR",
        f"key-0  …{K1[-4:]}  healthy      2",
        (
            f"key-1  …{WRONG[-4:]}  quarantined  -       AuthenticationError"
            " INCORRECT_API_KEY_PROVIDED"
        ),
        f"key-2  …{K2[-4:]}  healthy      1",
        "2 ok, 1 failed",
    ]
    assert err.count("\n") == 1
    assert "AuthenticationError" in err
    assert "[key=key-1]" in err
    for secret in (K1, K2, WRONG):
        assert secret not in out + err


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_keys_file_with_labels_comments_and_blank_lines(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    fake, base_url = served
    keys = write(
        tmp_path,
        f"# keys of the teams\n\nteam-a = {K1}   # production\n{K2}\n  团队-c={WRONG}\n",
    )
    code, out, _ = run(capsys, "models", "--base-url", base_url, "--keys-file", keys, "--json")
    assert code == 1
    entries = json.loads(out)
    assert [(e["label"], e["ok"], e["state"]) for e in entries] == [
        ("team-a", True, "healthy"),
        ("key-1", True, "healthy"),
        ("团队-c", False, "quarantined"),
    ]
    assert entries[2]["error"]["type"] == "INCORRECT_API_KEY_PROVIDED"
    assert fake.count(K1) == fake.count(K2) == fake.count(WRONG) == 1


def test_the_table_aligns_wide_characters(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    _, base_url = served
    keys = write(tmp_path, f"团队={K1}\nb={K2}\n")
    code, out, _ = run(capsys, "models", "--base-url", base_url, "--keys-file", keys)
    assert code == 0
    assert out.splitlines()[:3] == [
        "LABEL  KEY    STATE    MODELS  ERROR",
        f"团队   …{K1[-4:]}  healthy  2",
        f"b      …{K2[-4:]}  healthy  1",
    ]


def test_keys_from_the_command_line_and_a_file_add_up(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str], tmp_path: Path
) -> None:
    _, base_url = served
    keys = write(tmp_path, f"second={K2}\n")
    code, out, _ = run(
        capsys, "models", "--base-url", base_url, "--app-key", K1, "--keys-file", keys, "--json"
    )
    assert code == 0
    assert [entry["label"] for entry in json.loads(out)] == ["key-0", "second"]


def test_a_keys_file_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{DEMO_KEY}\ndemo={DEMO_KEY}\n"))
    code, out, _ = run(capsys, "models", "--demo", "--keys-file", "-", "--json")
    assert code == 0
    assert [entry["label"] for entry in json.loads(out)] == ["key-0", "demo"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n\n", "holds no key"),
        (f"{K1}\n=abc\n", "line 2: expected KEY or LABEL=KEY"),
        ("label=\n", "line 1: expected KEY or LABEL=KEY"),
        (f"{K1}\nsame={K1}\nsame={K2}\n", "the label 'same' is used by two keys"),
        (f"key-1={K1}\n{K2}\n", "the label 'key-1' is used by two keys"),
        ("abcd efgh\n", "line 1: the key contains whitespace"),
        ("abc\x01def\n", "control"),
    ],
)
def test_a_bad_keys_file_is_a_usage_error_without_the_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    code, out, err = run(capsys, "models", "--demo", "--keys-file", write(tmp_path, text))
    assert code == 2
    assert out == ""
    assert message in err
    for secret in (K1, K2, "efgh", "def"):
        assert secret not in err


def test_a_missing_keys_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "models", "--keys-file", str(tmp_path / "nope.txt"))
    assert code == 2
    assert "cannot read keys file" in err
    assert "No such file" in err


def test_a_keys_file_that_is_not_text_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "keys.bin"
    path.write_bytes(b"\xff\xfe\x00key")
    code, _, err = run(capsys, "models", "--keys-file", str(path))
    assert code == 2
    assert "not UTF-8 text" in err


def test_labelled_keys_is_a_list_without_labels() -> None:
    assert labelled_keys([(None, "a"), (None, "b")]) == ["a", "b"]
    assert labelled_keys([(None, "a"), ("x", "b")]) == {"key-0": "a", "x": "b"}


def test_read_keys_file_keeps_equals_signs_inside_a_labelled_key(tmp_path: Path) -> None:
    assert read_keys_file(write(tmp_path, "a=abc==\n")) == [("a", "abc==")]


def test_progress_is_off_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = write(tmp_path, f"{DEMO_KEY}\n" * PROGRESS_MIN_KEYS)
    code, _, err = run(capsys, "models", "--demo", "--keys-file", keys)
    assert code == 0
    assert err == ""


def test_forced_progress_on_a_pipe_writes_whole_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = write(tmp_path, f"{DEMO_KEY}\n{WRONG}\n{DEMO_KEY}\n")
    code, out, err = run(capsys, "models", "--demo", "--keys-file", keys, "--progress")
    assert code == 1
    lines = err.splitlines()
    assert "\r" not in err
    assert lines[0].startswith("[#")
    assert lines[1] == "[########################] 3/3 keys, 1 failed"
    assert lines[2].startswith("wishub: AuthenticationError")
    assert out.endswith("2 ok, 1 failed\n")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("count", "shown"), [(PROGRESS_MIN_KEYS - 1, False), (PROGRESS_MIN_KEYS, True)]
)
def test_progress_shows_on_a_terminal_for_many_keys(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    count: int,
    shown: bool,
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    keys = write(tmp_path, f"{DEMO_KEY}\n" * count)
    assert main(["models", "--demo", "--keys-file", keys]) == 0
    drawn = terminal.getvalue()
    assert (f"\r[{'#' * 24}] {count}/{count} keys\n" in drawn) is shown
    assert main(["models", "--demo", "--keys-file", keys, "--no-progress"]) == 0
    assert terminal.getvalue() == drawn
    capsys.readouterr()


def test_progress_redraws_at_most_ten_times_a_second() -> None:
    clock = [100.0]
    terminal = FakeTerminal()
    progress = Progress(terminal, 4)
    progress.clock = lambda: clock[0]
    for _ in range(3):
        progress.done += 1
        progress.draw()  # the first draws; the next two come too soon
    clock[0] += 0.2
    progress.draw()
    progress.done += 1
    progress.finish()
    assert terminal.getvalue().split("\r")[1:] == [
        "[######------------------] 1/4 keys",
        "[##################------] 3/4 keys",
        "[########################] 4/4 keys\n",
    ]


def test_table_pads_every_column_but_the_last() -> None:
    assert table(["A", "BB"], [["xyz", ""], ["模", "1"]]) == ["A    BB", "xyz", "模   1"]


def test_docs_cli_page_names_every_option_and_exit_code() -> None:
    page = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in commands.choices.items():
        assert f"wishub {command}" in page, f"document `wishub {command}` in docs/cli.md"
        for action in subparser._actions:
            for option in action.option_strings:
                assert option in page, f"document `wishub {command} {option}` in docs/cli.md"
    for code in ("`0`", "`1`", "`2`", "`130`"):
        assert code in page


def test_the_table_names_a_connection_failure(
    capsys: pytest.CaptureFixture[str], served: tuple[FakeWishub, str]
) -> None:
    fake, base_url = served
    fake.fail(K2, shape="drop", times=3)
    argv = ["models", "--base-url", base_url, "--app-key", K1, "--app-key", K2]
    code, out, err = run(capsys, *argv)
    assert code == 1
    # three failures in a row with no key effect of their own cool the key briefly
    assert out.splitlines()[2] == f"key-1  …{K2[-4:]}  cooling  -       APIConnectionError"
    assert "APIConnectionError: connection failed" in err


def test_an_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(anyio, "run", interrupted)
    assert run(capsys, "models", "--demo")[0] == 130


@pytest.mark.parametrize(
    "argv",
    [
        ["models", WRONG],
        [WRONG],
        ["chat", "--max-tokens", WRONG, "hi"],
    ],
    ids=["stray-argument", "as-command", "as-option-value"],
)
def test_usage_errors_never_echo_a_key(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert WRONG not in err
    assert "…" + WRONG[-4:] in err


def test_a_closed_stdout_ends_quietly() -> None:
    keys = "".join(f"{n:032x}\n" for n in range(400))  # JSON far beyond a pipe's buffer
    done = subprocess.run(  # noqa: S602 - a pipeline is the point
        f"{sys.executable} -m wishub_async models --demo --keys-file - --json | head -c 1",
        input=keys,
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.stdout == "["
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
