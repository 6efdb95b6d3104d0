"""The httpx transport's own connections: small pools (one connection each) and proxies.

Promises (``_httpx_pools``): connections never outnumber ``max_concurrency``; a call
takes a free, warm connection before opening one; a body left open holds its
connection and nothing else; a cancelled call gives its pool back; proxies come from
the environment, as urllib reads it.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
import respx
from conftest import K1, K2, models_body

from wishub_async import AsyncWishub, RetryPolicy
from wishub_async._httpx import HttpxTransport
from wishub_async._httpx_pools import OwnPools
from wishub_async.exceptions import APIConnectionError
from wishub_async.testing import FakeWishub

HEADERS = {"authorization": f"Bearer {K1}"}


def pools_of(wh: AsyncWishub) -> OwnPools:
    transport = wh._shared.transport
    assert isinstance(transport, HttpxTransport)
    pools = transport.owned_pools
    assert pools is not None
    return pools


async def get(pools: OwnPools, url: str, *, stream: bool = False) -> httpx.Response:
    request = httpx.Request("GET", url + "/models", headers=HEADERS)
    response = await pools.handle_async_request(request)
    if not stream:
        await response.aread()
        await response.aclose()
    return response


@pytest.mark.anyio
async def test_connections_never_outnumber_max_concurrency_and_stay_warm() -> None:
    fake = FakeWishub([K1], latency=0.05)
    async with fake.serve() as url, AsyncWishub(app_key=K1, base_url=url, max_concurrency=3) as wh:
        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(wh.models.list)
        assert fake.connections_opened == 3
        for _ in range(5):
            await wh.models.list()  # one at a time: the warmest connection each time
        assert fake.connections_opened == 3
        assert pools_of(wh).small_pools.pools == 3


@pytest.mark.anyio
async def test_an_open_body_holds_its_connection_and_nothing_else() -> None:
    fake = FakeWishub([K1])
    async with fake.serve() as url:
        pools = OwnPools(2)
        try:
            held = await get(pools, url, stream=True)
            assert (await get(pools, url)).status_code == 200  # on a second connection
            assert fake.connections_opened == 2
            await held.aread()  # read to the end: the connection can serve another call
            await held.aclose()
            assert (await get(pools, url)).status_code == 200  # the freed one, reused
            assert fake.connections_opened == 2
            assert pools.small_pools.pools == 2
        finally:
            await pools.aclose()


@pytest.mark.anyio
async def test_past_the_limit_a_call_waits_for_a_body_to_close() -> None:
    fake = FakeWishub([K1])
    async with fake.serve() as url:
        pools = OwnPools(2)
        try:
            first, second = await get(pools, url, stream=True), await get(pools, url, stream=True)
            answers: list[int] = []

            async def third() -> None:
                answers.append((await get(pools, url)).status_code)

            async with anyio.create_task_group() as group:
                group.start_soon(third)
                await anyio.sleep(0.2)
                assert answers == []  # both connections are held by open bodies
                for body in (first, second):
                    await body.aread()
                    await body.aclose()
            assert answers == [200]
            assert fake.connections_opened == 2
        finally:
            await pools.aclose()


@pytest.mark.anyio
async def test_a_cancelled_call_gives_its_pool_back() -> None:
    fake = FakeWishub([K1], latency=5.0)
    async with fake.serve() as url:
        pools = OwnPools(4)
        try:
            with anyio.move_on_after(0.2) as scope:
                await get(pools, url)
            assert scope.cancelled_caught
            fake.latency = 0.0
            assert (await get(pools, url)).status_code == 200
            assert pools.small_pools.pools == 1  # the cancelled call's pool, taken again
        finally:
            await pools.aclose()
    assert pools.is_closed


@pytest.mark.anyio
async def test_calls_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeWishub([K1])
    async with fake.serve() as url:
        proxy = url.removesuffix("/v1")
        monkeypatch.setenv("HTTP_PROXY", proxy)  # the fake answers as the proxy would
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with AsyncWishub(
            app_key=K1, base_url="http://wishub.invalid/v1", allow_http=True
        ) as wh:
            models = await wh.models.list()  # never resolved here: the proxy's to reach
        assert models.data
        assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_no_proxy_sends_straight_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWishub([K1])
    with anyio.fail_after(30):
        async with fake.serve() as url:
            monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            async with AsyncWishub(app_key=K1, base_url=url) as wh:
                assert (await wh.models.list()).data
            monkeypatch.delenv("NO_PROXY")
            monkeypatch.delenv("no_proxy", raising=False)
            async with AsyncWishub(app_key=K1, base_url=url, retry=RetryPolicy(attempts=1)) as wh:
                with pytest.raises(APIConnectionError):
                    await wh.models.list()  # through the proxy that is not there


@pytest.mark.anyio
async def test_no_cookie_is_kept_so_none_rides_along_with_another_key() -> None:
    with respx.mock(base_url="https://wishub.test/v1") as mock:
        route = mock.get("/models").respond(
            json=models_body("m"), headers={"set-cookie": "session=of-the-first-key; Path=/"}
        )
        async with AsyncWishub(app_keys=[K1, K2], base_url="https://wishub.test/v1") as wh:
            await wh.with_key("key-0").models.list()
            await wh.with_key("key-1").models.list()
        assert route.call_count == 2
        assert all("cookie" not in call.request.headers for call in route.calls)
