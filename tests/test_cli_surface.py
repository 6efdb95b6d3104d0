"""``wishub rerank``, ``wishub images`` and ``wishub chat --image``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from wishub_async._cli import main
from wishub_async.testing._images import png

PANDAS = ["pandas eat bamboo", "the stock market", "bamboo forests"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_rerank_demo_prints_a_ranked_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "pandas bamboo", *PANDAS, "--demo"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "SCORE   INDEX  DOCUMENT",
        "1.0000  0      pandas eat bamboo",
        "0.5000  2      bamboo forests",
        "0.0000  1      the stock market",
    ]


def test_rerank_json_with_top_n(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "pandas bamboo", *PANDAS, "--demo", "--json", "--top-n", "1"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"] == [
        {"index": 0, "relevance_score": 1.0, "document": "pandas eat bamboo"}
    ]
    assert answer["usage"]["total_tokens"] > 0
    assert answer["id"].startswith("rerank-fake-")


def test_rerank_documents_from_a_file_and_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("docs.txt").write_text("\nbamboo forests\n\n  pandas eat bamboo \n", encoding="utf-8")
    assert main(["rerank", "pandas", "--documents-file", "docs.txt", "--demo"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "1.0000  1      pandas eat bamboo"
    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo three\n"))
    assert main(["rerank", "three", "zero", "--documents-file", "-", "--demo"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "1.0000  2      two three"


def test_rerank_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["rerank", "q", "--demo"]) == 2
    assert "needs documents" in capsys.readouterr().err
    assert main(["rerank", "q", "--documents-file", "missing.txt", "--demo"]) == 2
    assert "cannot read documents file" in capsys.readouterr().err
    monkeypatch.setenv("WISHUB_APP_KEY", "k" * 32)
    assert main(["rerank", "q", "doc"]) == 2
    assert "--model" in capsys.readouterr().err


def test_rerank_api_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "q", "doc", "--demo", "--model", "nope"]) == 1
    assert "NotFoundError" in capsys.readouterr().err


def test_rerank_without_document_texts_prints_ours(capsys: pytest.CaptureFixture[str]) -> None:
    # A server that does not repeat the documents: the table shows the ones sent.
    from wishub_async._cli import rerank  # noqa: PLC0415
    from wishub_async.models import RerankItem  # noqa: PLC0415

    assert rerank._one_line(RerankItem(1, 0.5), ["a", "b\n c"]) == "b c"
    assert rerank._one_line(RerankItem(7, 0.5), ["a"]) == ""


def test_images_demo_saves_a_png(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "a red panda", "--demo"]) == 0
    assert capsys.readouterr().out == "image.png\n"
    assert Path("image.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_images_several_with_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "a red panda", "--demo", "-n", "2", "-o", "out/panda.webp"]) == 2
    assert "cannot write out" in capsys.readouterr().err  # no such folder
    Path("out").mkdir()
    assert main(["images", "a red panda", "--demo", "-n", "2", "-o", "out/panda.webp"]) == 0
    assert capsys.readouterr().out.splitlines() == ["out/panda-1.webp", "out/panda-2.webp"]
    assert Path("out/panda-2.webp").read_bytes() != Path("out/panda-1.webp").read_bytes()


def test_images_never_overwrite_unless_forced(capsys: pytest.CaptureFixture[str]) -> None:
    Path("image.png").write_bytes(b"mine")
    assert main(["images", "cat", "--demo"]) == 2
    assert "image.png exists" in capsys.readouterr().err
    assert Path("image.png").read_bytes() == b"mine"
    assert main(["images", "cat", "--demo", "--force"]) == 0
    assert Path("image.png").read_bytes() != b"mine"


def test_images_urls_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "cat", "--demo", "--url", "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("https://wishub.fake/images/") for line in lines)
    assert main(["images", "cat", "--demo", "--json", "--size", "64*64"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["created"] == "2023-11-14T22:13:20+00:00"
    assert answer["images"] == [{"file": "image.png", "url": None, "revised_prompt": None}]


def test_images_usage_and_api_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["images", "cat", "--demo", "-n", "9"]) == 1
    assert "BadRequestError" in capsys.readouterr().err
    monkeypatch.setenv("WISHUB_APP_KEY", "k" * 32)
    assert main(["images", "cat"]) == 2
    assert "--model" in capsys.readouterr().err


def test_an_image_whose_type_is_unknown_keeps_a_png_name() -> None:
    from wishub_async._cli.images import _names  # noqa: PLC0415

    assert _names(None, 1, ".png") == [Path("image.png")]
    assert _names("a/b.jpg", 2, "") == [Path("a/b-1.jpg"), Path("a/b-2.jpg")]


def test_chat_with_images(capsys: pytest.CaptureFixture[str]) -> None:
    Path("cat.png").write_bytes(png((1, 2, 3)))
    argv = ["chat", "What is it?", "--image", "cat.png", "--image", "https://x.test/a.jpg"]
    assert main([*argv, "--demo"]) == 0
    assert capsys.readouterr().out == "You said: What is it? [2 images]\n"
    assert main(["chat", "What?", "--image", "missing.png", "--demo"]) == 2
    assert "cannot read image file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["rerank", "images"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert f"wishub {command} " in out
    assert "--demo" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"wishub {command} " in capsys.readouterr().out
