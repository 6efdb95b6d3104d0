"""One benchmark measurement in this process: a client, a concurrency, a duration.

The job is the same for every client: ``GET /v1/models`` on the loopback server, the
reply parsed into objects (the SDKs) or into JSON (the raw libraries). Every client
runs with its library's default options, except ``raw-httpx``, whose pool is sized to
the concurrency (all its connections kept alive; ``raw-httpx-defaults`` is httpx as it
comes: 100 connections, 20 kept alive). The ``embed-*`` clients post an embedding
(a call naming a model) through the aiohttp transport with no rate budget, with a
configured limit that never binds, and with the adaptive default: the budget step's
cost. ``load`` is not a client under test: it is a minimal raw-socket load generator
that shows how much the server itself can sustain.

Prints one JSON line: ``{"rps": ..., "requests": ..., "p50_ms": ..., "p99_ms": ...}``;
with ``--in-flight N``, the memory each of N calls in flight holds instead (run it
against a server answering slowly: ``server.py --latency 1``).

    python benchmarks/clients.py wishub-aiohttp --url http://127.0.0.1:PORT/v1 -c 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Literal, cast

import attrs

if TYPE_CHECKING:
    import httpx

__all__ = ["CLIENTS", "FAKE_KEY", "HandModel", "HandModelList", "measure"]

FAKE_KEY = "fakebench0000000000000000000000a"


@attrs.frozen
class HandModel:
    """One model, as a hand-written client would declare it."""

    id: str
    object: str = "model"
    created: str | int = ""
    owned_by: str = ""


@attrs.frozen
class HandModelList:
    """The model list, as a hand-written client would declare it."""

    data: list[HandModel]
    object: str = "list"


Job = Callable[[], Awaitable[object]]


@asynccontextmanager
async def wishub_job(backend: Literal["httpx", "aiohttp"], base_url: str) -> AsyncIterator[Job]:
    from wishub_async import AsyncWishub  # noqa: PLC0415 - import only what is measured

    # Default options: max_concurrency=100, so no call waits in our queue at c <= 100.
    async with AsyncWishub(app_key=FAKE_KEY, base_url=base_url, backend=backend) as wh:
        models = wh.models

        async def job() -> object:
            return await models.list()

        yield job


@asynccontextmanager
async def wishub_aiohttp_json(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """The aiohttp transport without the ``speed`` extra: the standard library's json."""
    del concurrency
    if "wishub_async" in sys.modules:
        raise RuntimeError("wishub-aiohttp-json runs in a process that has not loaded wishub")
    sys.modules["orjson"] = None  # type: ignore[assignment] # as if it were not installed
    async with wishub_job("aiohttp", base_url) as job:
        yield job


@asynccontextmanager
async def embed_job(base_url: str, limit: str) -> AsyncIterator[Job]:
    """An embedding on the aiohttp transport: no budget, a limit never reached, adaptive."""
    from wishub_async import AsyncWishub, RateLimit  # noqa: PLC0415

    limits = {
        "none": RateLimit(),  # no budget step at all
        "limits": RateLimit(requests=10**9, tokens=10**12, per=60),  # never binds
        "adaptive": None,  # the default: an adaptive rate (it never sees a 429 here)
    }[limit]
    async with AsyncWishub(
        app_key=FAKE_KEY, base_url=base_url, backend="aiohttp", limits=limits
    ) as wh:
        embeddings = wh.embeddings

        async def job() -> object:
            return await embeddings.create(model="bge-m3", input="benchmark")

        yield job


@asynccontextmanager
async def wishub_httpx(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    del concurrency
    async with wishub_job("httpx", base_url) as job:
        yield job


@asynccontextmanager
async def wishub_aiohttp(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    del concurrency
    async with wishub_job("aiohttp", base_url) as job:
        yield job


@asynccontextmanager
async def raw_httpx_job(limits: httpx.Limits | None, base_url: str) -> AsyncIterator[Job]:
    import httpx  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    url = base_url + "/models"
    client = httpx.AsyncClient() if limits is None else httpx.AsyncClient(limits=limits)
    async with client:

        async def job() -> object:
            response = await client.get(url, headers=headers)
            return response.json()

        yield job


@asynccontextmanager
async def raw_httpx(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """``httpx.AsyncClient`` with its pool sized to the concurrency, all kept alive."""
    import httpx  # noqa: PLC0415

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with raw_httpx_job(limits, base_url) as job:
        yield job


@asynccontextmanager
async def raw_httpx_defaults(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """``httpx.AsyncClient()`` as it comes: 100 connections, 20 kept alive."""
    del concurrency
    async with raw_httpx_job(None, base_url) as job:
        yield job


@asynccontextmanager
async def raw_aiohttp(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """``aiohttp.ClientSession()`` as it comes (a pool of 100 connections)."""
    del concurrency
    import aiohttp  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    url = base_url + "/models"
    async with aiohttp.ClientSession() as session:

        async def job() -> object:
            async with session.get(url, headers=headers) as response:
                return await response.json()

        yield job


@asynccontextmanager
async def raw_aiohttp_cattrs(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """The same job written by hand: aiohttp GET + ``json()`` + a cattrs converter.

    Its own attrs classes for the model list, and ``cattrs.Converter()`` as it comes
    (``created`` is left as the platform sends it: a string or an int).
    """
    del concurrency
    import aiohttp  # noqa: PLC0415
    import cattrs  # noqa: PLC0415

    converter = cattrs.Converter()
    converter.register_structure_hook(str | int, lambda value, _: value)
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    url = base_url + "/models"
    async with aiohttp.ClientSession() as session:

        async def job() -> object:
            async with session.get(url, headers=headers) as response:
                return converter.structure(await response.json(), HandModelList)

        yield job


@asynccontextmanager
async def openai_sdk(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    del concurrency  # the SDK's defaults, as it comes
    from openai import AsyncOpenAI  # noqa: PLC0415

    async with AsyncOpenAI(base_url=base_url, api_key=FAKE_KEY, max_retries=0) as client:

        async def job() -> object:
            return await client.models.list()

        yield job


CLIENTS: dict[str, Callable[[str, int], AbstractAsyncContextManager[Job]]] = {
    "wishub-httpx": wishub_httpx,
    "wishub-aiohttp": wishub_aiohttp,
    "wishub-aiohttp-json": wishub_aiohttp_json,
    "raw-httpx": raw_httpx,
    "raw-httpx-defaults": raw_httpx_defaults,
    "raw-aiohttp": raw_aiohttp,
    "raw-aiohttp-cattrs": raw_aiohttp_cattrs,
    "openai": openai_sdk,
    **{
        f"embed-{limit}": lambda url, _, limit=limit: embed_job(url, limit)
        for limit in ("none", "limits", "adaptive")
    },
}


async def measure(job: Job, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    """Run ``concurrency`` workers calling ``job`` back to back: requests a second and
    the latency of each call counted (median and 99th percentile)."""
    times: list[float] = []
    counting = False
    stop_at = time.perf_counter() + warmup + duration

    async def worker() -> None:
        clock = time.perf_counter
        while (started := clock()) < stop_at:
            await job()
            if counting:
                times.append(clock() - started)

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    started = time.perf_counter()
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(times, n=100) if len(times) > 1 else times * 99
    return {
        "rps": len(times) / elapsed,
        "requests": len(times),
        "elapsed": elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
    }


async def in_flight(job: Job, calls: int, hold: float) -> dict[str, float]:
    """The memory each of ``calls`` calls in flight holds (the server answers slowly).

    A first round opens the connections, so the figure counts what a call holds, not
    its connection; allocations are traced from just before the measured round.
    """
    await asyncio.gather(*(job() for _ in range(calls)))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    flying = asyncio.gather(*(job() for _ in range(calls)))
    await asyncio.sleep(hold)
    during = tracemalloc.get_traced_memory()[0]
    await flying
    tracemalloc.stop()
    return {"calls": calls, "bytes_per_call": (during - before) / calls}


class _LoadProtocol(asyncio.Protocol):
    """Sends the next request as soon as the previous fixed-size reply has arrived."""

    def __init__(self, request: bytes, reply_size: int, counter: list[int]) -> None:
        self.request = request
        self.reply_size = reply_size
        self.counter = counter
        self.pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= self.reply_size:
            self.pending -= self.reply_size
            self.counter[0] += 1
            if self.transport is not None:
                self.transport.write(self.request)


async def load(base_url: str, concurrency: int, duration: float) -> dict[str, float]:
    """The server's own capacity: raw sockets, keep-alive, no parsing beyond byte counts."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from server import MODELS_RESPONSE  # noqa: PLC0415

    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = (
        f"GET {url.path}/models HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {FAKE_KEY}\r\n\r\n"
    ).encode()
    counter = [0]
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(concurrency):
        transport, _protocol = await loop.create_connection(
            lambda: _LoadProtocol(request, len(MODELS_RESPONSE), counter), host, port
        )
        transports.append(transport)
    await asyncio.sleep(0.3)
    before, started = counter[0], time.perf_counter()
    await asyncio.sleep(duration)
    done, elapsed = counter[0] - before, time.perf_counter() - started
    for transport in transports:
        transport.close()
    return {"rps": done / elapsed, "requests": done, "elapsed": elapsed}


async def run(args: argparse.Namespace) -> None:
    async with CLIENTS[args.client](args.url, args.concurrency) as job:
        if args.in_flight:
            result = await in_flight(job, args.in_flight, args.hold)
        else:
            result = await measure(job, args.concurrency, args.duration, args.warmup)
    print(json.dumps({"client": args.client, "concurrency": args.concurrency, **result}))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=[*CLIENTS, "load"])
    parser.add_argument("--url", required=True, help="base URL, such as http://127.0.0.1:8000/v1")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=2.0)
    parser.add_argument("-w", "--warmup", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, default=0, help="calls held in flight")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds before measuring")
    args = parser.parse_args(argv)
    if args.client == "load":
        from server import run_fast  # noqa: PLC0415 - uvloop when installed, like the server

        result = run_fast(load(args.url, args.concurrency, args.duration))
        print(json.dumps({"client": "load", "concurrency": args.concurrency, **result}))
        return
    # Every client under test runs on the standard asyncio loop, as users' code does.
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
