"""One benchmark measurement in this process: a client, a concurrency, a duration.

The job is the same for every client: ``GET /v1/models`` on the loopback server, the
reply parsed into objects (the SDKs) or into JSON (the raw libraries). Every client
runs with its library's default options (pool sizes included), except
``raw-httpx-keep100``, which keeps 100 connections alive: it shows what httpcore's pool
costs when it keeps many (why wishub_async keeps 20 on httpx). ``load`` is not
a client under test: it is a minimal raw-socket load generator that shows how much the
server itself can sustain. Prints one JSON line: ``{"rps": ..., "requests": ...}``.

    python benchmarks/clients.py wishub-aiohttp --url http://127.0.0.1:PORT/v1 -c 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
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
    """``httpx.AsyncClient()`` as it comes: 100 connections, 20 kept alive."""
    del concurrency
    async with raw_httpx_job(None, base_url) as job:
        yield job


@asynccontextmanager
async def raw_httpx_keep100(base_url: str, concurrency: int) -> AsyncIterator[Job]:
    """``httpx.AsyncClient`` keeping 100 connections alive (httpx's default keeps 20)."""
    del concurrency
    import httpx  # noqa: PLC0415

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0)
    async with raw_httpx_job(limits, base_url) as job:
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
    "raw-httpx": raw_httpx,
    "raw-httpx-keep100": raw_httpx_keep100,
    "raw-aiohttp": raw_aiohttp,
    "raw-aiohttp-cattrs": raw_aiohttp_cattrs,
    "openai": openai_sdk,
}


async def measure(job: Job, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    """Run ``concurrency`` workers calling ``job`` back to back; requests per second."""
    done = 0
    counting = False
    stop_at = time.perf_counter() + warmup + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await job()
            if counting:
                done += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    started = time.perf_counter()
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    return {"rps": done / elapsed, "requests": done, "elapsed": elapsed}


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


async def run(name: str, base_url: str, concurrency: int, duration: float, warmup: float) -> None:
    async with CLIENTS[name](base_url, concurrency) as job:
        result = await measure(job, concurrency, duration, warmup)
    print(json.dumps({"client": name, "concurrency": concurrency, **result}), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=[*CLIENTS, "load"])
    parser.add_argument("--url", required=True, help="base URL, such as http://127.0.0.1:8000/v1")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=2.0)
    parser.add_argument("-w", "--warmup", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.client == "load":
        from server import run_fast  # noqa: PLC0415 - uvloop when installed, like the server

        result = run_fast(load(args.url, args.concurrency, args.duration))
        print(json.dumps({"client": "load", "concurrency": args.concurrency, **result}))
        return
    # Every client under test runs on the standard asyncio loop, as users' code does.
    asyncio.run(run(args.client, args.url, args.concurrency, args.duration, args.warmup))


if __name__ == "__main__":
    main(sys.argv[1:])
