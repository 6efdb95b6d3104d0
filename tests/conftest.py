"""Shared fixtures.

Backend-neutral tests take the ``backend`` fixture: they run once under pytest-asyncio
and once on trio (``pytest_pyfunc_call`` below runs the trio variant).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio

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
