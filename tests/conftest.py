"""Shared fixtures.

Backend-neutral tests take the ``backend`` fixture: they run once under pytest-asyncio
and once on trio (``pytest_pyfunc_call`` below runs the trio variant).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import pytest
import trio

from wishub_async import AsyncWishub
from wishub_async._transport import HttpxTransport
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
def backend(request: pytest.FixtureRequest) -> str:
    """Run the requesting async test on asyncio (pytest-asyncio) and on trio."""
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or callspec.params.get("backend") != "trio":
        return None
    # pytest-asyncio wraps .obj; the module (or class) still holds the coroutine function.
    test = getattr(pyfuncitem.instance or pyfuncitem.module, pyfuncitem.originalname)
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    trio.run(functools.partial(test, **kwargs))
    return True


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


def pool_of(wh: AsyncWishub) -> httpcore.AsyncConnectionPool:
    """The httpcore pool under the client's own ``httpx.AsyncClient``."""
    transport = wh._shared.transport
    assert isinstance(transport, HttpxTransport)
    pool = transport.client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    return pool


def assert_nothing_held(wh: AsyncWishub) -> None:
    """No connection busy or queued in the pool, no slot held on any key or limiter."""
    pool = pool_of(wh)
    assert not pool._requests, "a request is still queued in the httpx pool"
    busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    assert not busy, f"connections still busy: {busy}"
    assert_no_slot_held(wh)


def assert_no_slot_held(wh: AsyncWishub) -> None:
    """No request counted in flight on any key, no limiter slot borrowed."""
    assert wh._shared.limiter.borrowed_tokens == 0
    for key in wh._shared.ring.keys:
        assert key.in_flight == 0, key
        assert key.limiter is None or key.limiter.borrowed_tokens == 0, key
