"""Shared fixtures.

Async tests run under pytest-asyncio (``@pytest.mark.asyncio``). Tests that must hold
on every event loop are marked ``@pytest.mark.anyio`` instead: anyio's own pytest
plugin runs each of them on asyncio and on trio (the ``anyio_backend`` fixture).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from wishub_async import AsyncWishub
from wishub_async.testing import FakeWishub, instant_waits

K1 = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
K2 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
WRONG = "ffffffffffffffffffffffffffffdead"


_LOOPBACK = {"127.0.0.1", "::1", "localhost", None}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in _LOOPBACK and not str(name).startswith("127."):
        message = f"tests may only reach loopback, not {name!r}"
        raise OSError(message)
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only  # every resolver path of asyncio, trio and httpx


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    """Run the requesting test on both transports (aiohttp only where asyncio runs)."""
    if request.param == "aiohttp" and anyio_backend != "asyncio":
        pytest.skip("backend='aiohttp' runs on asyncio only")
    return str(request.param)


@pytest.fixture(autouse=True)
def _instant_waits(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("real_waits"):
        yield
        return
    with instant_waits():
        yield


@pytest.fixture
def fake() -> FakeWishub:
    """A fake platform knowing K1 (two models) and K2 (one model)."""
    return FakeWishub({K1: ["m-1", "测试模型名称1"], K2: ["m-2"]})


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="wishub_async")
    return caplog


def models_body(*ids: str, **extra: Any) -> dict[str, Any]:
    """A platform-shaped model list."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": "", "owned_by": "", **extra}
            for model in ids
        ],
    }


@asynccontextmanager
async def over_http(fake: FakeWishub, **options: Any) -> AsyncIterator[AsyncWishub]:
    """A client talking to ``fake`` over real HTTP/1.1 on loopback (default key: K1)."""
    if "app_keys" not in options:
        options.setdefault("app_key", K1)
    async with fake.serve() as base_url, AsyncWishub(base_url=base_url, **options) as wh:
        yield wh


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Wait until ``condition()`` holds (a generous bound: never a timing assertion)."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - polls state that has no event to wait on
            await anyio.sleep(0.005)


def assert_nothing_held(wh: AsyncWishub) -> None:
    """No request counted in flight on any key, and no concurrency slot borrowed."""
    assert all(status.in_flight == 0 for status in wh.key_status()), wh.key_status()
    assert wh._shared.limiter.borrowed_tokens == 0
    for key in wh._shared.ring.keys:
        assert key.limiter is None or key.limiter.borrowed_tokens == 0, key
