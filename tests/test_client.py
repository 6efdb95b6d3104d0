"""AsyncWishub: lifecycle, configuration, views, headers."""

from __future__ import annotations

import gc
import warnings

import anyio
import httpx
import pytest
import respx
from conftest import K1, K2, models_body

from wishub_async import AsyncWishub, RetryPolicy, Timeout
from wishub_async._client import DEFAULT_BASE_URL, DEFAULT_MAX_CONCURRENCY
from wishub_async._httpx import HttpxTransport
from wishub_async._httpx_pools import OwnPools
from wishub_async.exceptions import ClientStateError, ConfigurationError
from wishub_async.testing import FakeWishub

BASE = "https://wishub.test/v1"


def transport_of(client: AsyncWishub) -> HttpxTransport:
    transport = client._shared.transport
    assert isinstance(transport, HttpxTransport)
    return transport


@pytest.mark.anyio
async def test_context_manager_opens_and_closes_the_owned_pool() -> None:
    async with AsyncWishub(app_key=K1) as wh:
        open_inside = not wh.is_closed
        pools = transport_of(wh).owned_pools
    assert open_inside
    assert wh.is_closed
    assert pools is not None
    assert pools.is_closed


@pytest.mark.anyio
async def test_aclose_is_idempotent() -> None:
    wh = AsyncWishub(app_key=K1)
    await wh.aclose()
    await wh.aclose()
    assert wh.is_closed


@pytest.mark.anyio
async def test_use_after_close_raises_a_clear_error(fake: FakeWishub) -> None:
    wh = fake.client(app_key=K1)
    async with wh:
        await wh.models.list()
    with pytest.raises(ClientStateError, match="closed; create a new one"):
        await wh.models.list()
    with pytest.raises(ClientStateError, match="closed"):
        async with wh:
            pass
    assert fake.count() == 1


@pytest.mark.anyio
async def test_a_client_used_before_async_with_can_still_be_entered(fake: FakeWishub) -> None:
    wh = fake.client(app_key=K1)
    await wh.models.list()  # opens it implicitly
    async with wh:
        await wh.models.list()
    assert wh.is_closed
    assert fake.count() == 2


@pytest.mark.anyio
async def test_a_closed_caller_client_is_a_clear_error() -> None:
    mine = httpx.AsyncClient(transport=FakeWishub([K1]))
    await mine.aclose()
    async with AsyncWishub(app_key=K1, base_url=BASE, http_client=mine) as wh:
        with pytest.raises(ClientStateError, match="http_client given to AsyncWishub is closed"):
            await wh.models.list()


@pytest.mark.anyio
async def test_entering_twice_is_refused() -> None:
    async with AsyncWishub(app_key=K1) as wh:
        with pytest.raises(ClientStateError, match="already open"):
            await wh.__aenter__()


@pytest.mark.anyio
async def test_a_client_works_without_async_with(fake: FakeWishub) -> None:
    wh = fake.client(app_key=K1)
    assert (await wh.models.list()).ids == ["m-1", "测试模型名称1"]
    await wh.aclose()


@pytest.mark.anyio
async def test_a_callers_http_client_is_used_and_never_closed() -> None:
    fake = FakeWishub([K1])
    mine = httpx.AsyncClient(transport=fake)
    async with AsyncWishub(app_key=K1, base_url=BASE, http_client=mine) as wh:
        await wh.models.list()
    assert fake.count() == 1
    assert not mine.is_closed
    await mine.aclose()


def forget_an_open_client(pools: list[OwnPools]) -> None:
    async def use() -> None:
        with respx.mock(base_url=BASE) as mock:
            mock.get("/models").respond(json=models_body("m"))
            wh = AsyncWishub(app_key=K1, base_url=BASE)
            await wh.models.list()  # opens it; nobody closes it
            owned = transport_of(wh).owned_pools
            assert owned is not None
            pools.append(owned)

    anyio.run(use)
    gc.collect()


def test_collected_while_open_warns_without_io() -> None:
    pools: list[OwnPools] = []
    with pytest.warns(ResourceWarning, match="garbage collected while open"):
        forget_an_open_client(pools)
    assert not pools[0].is_closed  # the finaliser did no I/O


def test_an_unused_client_is_collected_silently() -> None:
    wh = AsyncWishub(app_key=K1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del wh
        gc.collect()


@pytest.mark.anyio
async def test_pool_limits_follow_max_concurrency() -> None:
    async with AsyncWishub(app_key=K1, max_concurrency=321) as wh:
        pools = transport_of(wh).owned_pools
        assert pools is not None
        assert pools.small_pools.max_connections == 321
    assert DEFAULT_MAX_CONCURRENCY > 20  # more connections than httpx's default keeps


def test_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISHUB_APP_KEY", K1)
    monkeypatch.setenv("WISHUB_BASE_URL", "https://wishub-x6.ctyun.cn/v1/")
    wh = AsyncWishub()
    assert wh._options.base_url == "https://wishub-x6.ctyun.cn/v1"
    assert [status.redacted for status in wh.key_status()] == ["…" + K1[-4:]]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WISHUB_BASE_URL", raising=False)
    wh = AsyncWishub(app_key=K1)
    assert wh._options.base_url == DEFAULT_BASE_URL == "https://wishub-x1.ctyun.cn/v1"
    assert wh._options.retry == RetryPolicy()
    assert wh._options.timeout.read == 600.0


def test_missing_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WISHUB_APP_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="WISHUB_APP_KEY"):
        AsyncWishub()


@pytest.mark.parametrize(
    "bad",
    ["", " " + K1, K1 + "\n", "abc def", K1 + "\x00", "ключ" + K1, K1 + "\r\nX-Evil: 1"],
    ids=["empty", "leading-space", "newline", "inner-space", "nul", "non-ascii", "crlf"],
)
def test_malformed_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AsyncWishub(app_key=bad)
    assert bad.strip() not in str(caught.value) or not bad.strip()


def test_malformed_key_in_a_list_names_its_label() -> None:
    with pytest.raises(ConfigurationError, match="'key-1'"):
        AsyncWishub(app_keys=[K1, "bad key"])


@pytest.mark.parametrize(
    "kwargs",
    [{"app_key": K1, "app_keys": [K2]}, {"app_keys": []}, {"app_keys": K1}],
    ids=["both", "empty-list", "string-as-list"],
)
def test_key_argument_misuse_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        AsyncWishub(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["http://wishub-x1.ctyun.cn/v1", "http://10.0.0.1/v1", "ftp://host/v1", "not a url", "/v1"],
)
def test_unsafe_or_invalid_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        AsyncWishub(app_key=K1, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost/v1", "http://[::1]:9/v1"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert AsyncWishub(app_key=K1, base_url=url)._options.base_url == url


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    wh = AsyncWishub(app_key=K1, base_url="http://gateway.internal/v1", allow_http=True)
    assert wh._options.base_url.startswith("http://")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_concurrency": 0}, {"per_key_concurrency": 0}, {"backend": "curl"}],
)
def test_bad_limits_and_backends_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        AsyncWishub(app_key=K1, **kwargs)  # type: ignore[arg-type]


def test_an_authorization_header_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="app_key"):
        AsyncWishub(app_key=K1, headers={"Authorization": "Bearer x"})
    with pytest.raises(ConfigurationError, match="control"):
        AsyncWishub(app_key=K1, headers={"X-Trace": "a\r\nb"})


@pytest.mark.asyncio
@respx.mock(base_url=BASE, assert_all_called=True)
async def test_requests_carry_the_key_and_headers(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/models").respond(json=models_body("m"))
    async with AsyncWishub(app_key=K1, base_url=BASE, headers={"X-Team": "search"}) as wh:
        await wh.models.list()
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {K1}"
    assert sent.headers["x-team"] == "search"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"].startswith("wishub-async/")
    assert str(sent.url) == f"{BASE}/models"


@pytest.mark.asyncio
@respx.mock(base_url="https://wishub-x6.ctyun.cn/v1")
async def test_with_options_changes_options_and_shares_the_pool(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get("/models").respond(json=models_body("x6"))
    async with AsyncWishub(app_key=K1, base_url=BASE, headers={"X-Team": "t"}) as wh:
        view = wh.with_options(base_url="https://wishub-x6.ctyun.cn/v1", headers={"X-A": "1"})
        assert (await view.models.list()).ids == ["x6"]
        assert view._shared is wh._shared
        assert wh._options.base_url == BASE  # the parent is unchanged
        with pytest.raises(ClientStateError, match="parent"):
            async with view:
                pass
        await view.aclose()  # a view owns nothing
        assert not wh.is_closed
    assert route.calls.last.request.headers["x-a"] == "1"
    assert route.calls.last.request.headers["x-team"] == "t"  # headers are merged
    assert view.is_closed  # closing the parent closes every view


def test_with_options_validates_like_the_constructor() -> None:
    wh = AsyncWishub(app_key=K1)
    with pytest.raises(ConfigurationError):
        wh.with_options(base_url="http://example.com/v1")
    with pytest.raises(ConfigurationError):
        wh.with_options(retry=3)  # type: ignore[arg-type]
    assert wh.with_options(timeout=5)._options.timeout == Timeout.every(5)


def test_repr_shows_state_url_and_key_count_but_no_key() -> None:
    wh = AsyncWishub(app_keys={"team-a": K1, "team-b": K2})
    text = repr(wh) + repr(wh.with_key("team-b")) + repr(wh._shared.ring)
    assert "unopened" in text
    assert "keys=2" in text
    assert "key=team-b" in text
    assert K1 not in text
    assert K2 not in text


def test_with_key_rejects_an_unknown_label() -> None:
    wh = AsyncWishub(app_keys={"team-a": K1})
    with pytest.raises(ConfigurationError, match="no key labelled 'team-z'"):
        wh.with_key("team-z")


@pytest.mark.anyio
async def test_the_suite_cannot_reach_the_real_platform() -> None:
    from wishub_async.exceptions import APIConnectionError  # noqa: PLC0415

    async with AsyncWishub(app_key=K1, retry=RetryPolicy(attempts=1)) as wh:
        with pytest.raises(APIConnectionError, match="tests may only reach loopback"):
            await wh.models.list()
