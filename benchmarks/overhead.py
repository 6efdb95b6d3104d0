"""The per-request cost of our own layers, with the network taken out.

A stub transport answers every request at once with the benchmark server's canned
model list, so what is timed is only wishub_async: the pipeline (state check,
middleware chain, headers, retry loop, limiter, key choice, status check) and the
converter (JSON decoding and structuring into ``ModelList``). Prints one JSON line
of microseconds per request::

    python benchmarks/overhead.py
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy
from server import MODELS_RESPONSE

from wishub_async import AsyncWishub, Request
from wishub_async._converter import structure_json
from wishub_async._json import loads
from wishub_async._wire import WireRequest, WireResponse
from wishub_async.models import ModelList

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["main"]

BODY = MODELS_RESPONSE.partition(b"\r\n\r\n")[2]
HEADERS = CIMultiDictProxy(
    CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(BODY))})
)
"""Headers as the aiohttp transport hands them on (the fast path's)."""


class StubTransport:
    async def send(self, request: WireRequest) -> WireResponse:
        del request
        return WireResponse(200, HEADERS, BODY)

    async def aclose(self) -> None:
        pass


def _best_of(runs: int, count: int, fn: Callable[[int], None]) -> float:
    """Microseconds per call: the best of ``runs`` runs of ``count`` calls."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn(count)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


async def _timed(coro_fn: Callable[[], Awaitable[object]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await coro_fn()
    return time.perf_counter() - started


async def measure(count: int = 20_000, runs: int = 5) -> dict[str, float]:
    """Microseconds per request for each layer (best of ``runs``)."""
    async with AsyncWishub(app_key="fakeoverhead00000000000000000000") as wh:
        wh._shared.transport = StubTransport()  # noqa: SLF001 - the benchmark's stub
        request = Request("GET", "/models")
        results: dict[str, float] = {}
        layers: dict[str, Callable[[], Awaitable[object]]] = {
            "models_list_us": wh.models.list,
            "pipeline_us": lambda: wh._send(request),  # noqa: SLF001
        }
        for name, fn in layers.items():
            best = min([await _timed(fn, count) for _ in range(runs)])
            results[name] = best / count * 1e6
    results["converter_us"] = _best_of(runs, count, _structure_many)
    results["json_loads_us"] = _best_of(runs, count, _loads_many)
    return results


def _structure_many(count: int) -> None:
    for _ in range(count):
        structure_json(BODY, ModelList)


def _loads_many(count: int) -> None:
    for _ in range(count):
        loads(BODY)


def main() -> None:
    print(json.dumps({k: round(v, 2) for k, v in asyncio.run(measure()).items()}))


if __name__ == "__main__":
    main()
