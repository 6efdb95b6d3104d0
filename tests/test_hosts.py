"""Named hosts: ``host=`` in Python, ``--host`` on the command line."""

from __future__ import annotations

import httpx
import pytest
import respx
from conftest import K1

from wishub_async import HOSTS, AsyncWishub
from wishub_async._cli import COMMANDS, main
from wishub_async._client import DEFAULT_BASE_URL
from wishub_async.exceptions import ConfigurationError
from wishub_async.testing import FakeWishub

DASHSCOPE = "/api/v1/services/rerank/text-rerank/text-rerank"
MODELS = {"object": "list", "data": [{"id": "GLM-5.1", "object": "model"}]}
RANKED = {"output": {"results": [{"index": 0, "relevance_score": 0.5}]}, "request_id": "r"}


def test_the_presets() -> None:
    assert dict(HOSTS) == {
        "x1": "https://wishub-x1.ctyun.cn/v1",
        "x6": "https://wishub-x6.ctyun.cn/v1",
        "gateway": "https://ai.ctaigw.cn/v1",
        "coding": "https://wishub-x6.ctyun.cn/coding/v1",
    }
    assert HOSTS["x1"] == DEFAULT_BASE_URL
    with pytest.raises(TypeError):
        HOSTS["mine"] = "https://example.com/v1"  # type: ignore[index]


def base_url_of(wh: AsyncWishub) -> str:
    return wh._options.base_url


def test_the_default_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WISHUB_BASE_URL", raising=False)
    assert base_url_of(AsyncWishub(app_key=K1)) == "https://wishub-x1.ctyun.cn/v1"


@pytest.mark.parametrize("name", list(HOSTS))
def test_host_picks_the_base_url_and_beats_the_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WISHUB_BASE_URL", "https://elsewhere.example/v1")
    assert base_url_of(AsyncWishub(app_key=K1, host=name)) == HOSTS[name]  # type: ignore[arg-type]
    assert base_url_of(AsyncWishub(app_key=K1)) == "https://elsewhere.example/v1"


def test_host_and_base_url_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncWishub(app_key=K1, host="x6", base_url="https://wishub-x6.ctyun.cn/v1")
    with pytest.raises(ConfigurationError, match="unknown host 'x5'; known hosts: x1, x6"):
        AsyncWishub(app_key=K1, host="x5")  # type: ignore[arg-type]
    wh = AsyncWishub(app_key=K1)
    with pytest.raises(ConfigurationError, match="not both"):
        wh.with_options(host="x6", base_url="https://a.example/v1")
    with pytest.raises(ConfigurationError, match="unknown host"):
        wh.with_options(host=6)  # type: ignore[arg-type]


def test_a_view_on_another_host() -> None:
    wh = AsyncWishub(app_key=K1)
    view = wh.with_options(host="gateway")
    assert base_url_of(view) == "https://ai.ctaigw.cn/v1"
    assert base_url_of(view.with_options(host="coding")) == HOSTS["coding"]
    assert base_url_of(wh) == HOSTS["x1"]


def test_the_fake_refuses_a_host() -> None:
    with pytest.raises(TypeError, match="in-process"):
        FakeWishub().client(app_key=K1, host="x6")


@pytest.mark.asyncio
@respx.mock(assert_all_called=True)
async def test_routes_from_the_root_of_a_host_with_a_path(respx_mock: respx.MockRouter) -> None:
    # The coding plan lives below /coding/v1; DashScope routes start at the host's root.
    listed = respx_mock.get("https://wishub-x6.ctyun.cn/coding/v1/models")
    listed.mock(return_value=httpx.Response(200, json=MODELS))
    ranked = respx_mock.post(f"https://wishub-x6.ctyun.cn{DASHSCOPE}")
    ranked.mock(return_value=httpx.Response(200, json=RANKED))
    async with AsyncWishub(app_key=K1, host="coding") as wh:
        assert (await wh.models.list()).ids == ["GLM-5.1"]
        result = await wh.rerank.create(model="gte-rerank-v2", query="q", documents=["d"])
    assert result.id == "r"
    assert ranked.calls.last.request.headers["authorization"] == f"Bearer {K1}"


@respx.mock(assert_all_called=True)
def test_the_cli_host_option(
    respx_mock: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WISHUB_BASE_URL", "https://elsewhere.example/v1")
    route = respx_mock.get("https://wishub-x6.ctyun.cn/v1/models")
    route.mock(return_value=httpx.Response(200, json=MODELS))
    assert main(["models", "--host", "x6", "--app-key", K1]) == 0
    assert capsys.readouterr().out == "GLM-5.1\n"


def test_the_cli_refuses_host_with_base_url_or_an_unknown_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["models", "--host", "x6", "--base-url", "https://a.example/v1", "--app-key", K1]
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["models", "--host", "x5", "--demo"])
    assert exited.value.code == 2
    assert "invalid choice: 'x5'" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_host(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--host {x1,x6,gateway,coding}" in capsys.readouterr().out
