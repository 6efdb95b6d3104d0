"""A loopback platform for batch tests that counts requests per custom_id.

Run it in its own process: ``python tests/batch_server.py [--latency 0.02]`` prints
its base URL and serves until it is killed. A request's custom_id is the text it
carries (a chat request's last message, an embeddings request's input); what the
server does depends on its prefix:

- ``bad-``: 400 ``invalid_request_error`` (a failure for good);
- ``flaky-``: 500 ``INVOKE_MODEL_ERROR`` the first time, then an answer;
- ``echo-``: 400 whose message, body and ``x-request-id`` echo the caller's key;
- ``hang-``: no answer until ``POST /release``;
- anything else: an answer after a random delay of up to ``--latency`` seconds.

``GET /stats`` answers ``{"counts": {custom_id: requests}, "connections": N}``, N
being the connections open besides the one asking. A request is counted as soon as
its body has arrived, so once a killed client's connections are gone, every request
it sent is in the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter
from typing import Any

from aiohttp import web

COUNTS: web.AppKey[Counter[str]] = web.AppKey("counts", Counter)
RELEASE: web.AppKey[asyncio.Event] = web.AppKey("release", asyncio.Event)
LATENCY: web.AppKey[float] = web.AppKey("latency", float)
RUNNER: web.AppKey[web.AppRunner] = web.AppKey("runner", web.AppRunner)


def _custom_id(payload: dict[str, Any]) -> str:
    if "messages" in payload:
        return str(payload["messages"][-1]["content"])
    return str(payload.get("input"))


def _error(status: int, error_type: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": str(status * 1000 + 1), "type": error_type, "message": message}}
    return web.json_response(body, status=status, headers=headers)


async def answer(request: web.Request) -> web.Response:
    payload = await request.json()
    custom_id = _custom_id(payload)
    counts = request.app[COUNTS]
    counts[custom_id] += 1
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    if custom_id.startswith("bad-"):
        return _error(400, "invalid_request_error", f"cannot answer {custom_id}")
    if custom_id.startswith("echo-"):
        return _error(400, "invalid_request_error", f"bad key {key}", **{"x-request-id": key})
    if custom_id.startswith("flaky-") and counts[custom_id] == 1:
        return _error(500, "INVOKE_MODEL_ERROR", "服务接口异常,请联系管理员")
    if custom_id.startswith("hang-"):
        await request.app[RELEASE].wait()
    elif request.app[LATENCY]:
        await asyncio.sleep(random.uniform(0, request.app[LATENCY]))  # noqa: S311 - test jitter
    words = len(custom_id.split("-"))
    usage = {"prompt_tokens": words, "completion_tokens": 2, "total_tokens": words + 2}
    if "messages" in payload:
        message = {"role": "assistant", "content": f"answer to {custom_id}"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body: dict[str, Any] = {"object": "chat.completion", "choices": [choice], "usage": usage}
    else:
        data = [{"index": 0, "object": "embedding", "embeddings": [0.5, -0.25]}]
        usage = {"prompt_tokens": words, "total_tokens": words}
        body = {"object": "list", "data": data, "usage": usage}
    return web.json_response(body, headers={"x-request-id": f"req-{custom_id}"})


async def stats(request: web.Request) -> web.Response:
    server = request.app[RUNNER].server
    connections = len(server.connections) - 1 if server is not None else 0
    return web.json_response({"counts": request.app[COUNTS], "connections": connections})


async def release(request: web.Request) -> web.Response:
    request.app[RELEASE].set()
    return web.json_response({})


async def main(latency: float) -> None:
    app = web.Application()
    app[COUNTS] = Counter()
    app[RELEASE] = asyncio.Event()
    app[LATENCY] = latency
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_post("/v1/embeddings", answer)
    app.router.add_get("/stats", stats)
    app.router.add_post("/release", release)
    runner = web.AppRunner(app, access_log=None)
    app[RUNNER] = runner
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://127.0.0.1:{port}/v1", flush=True)  # noqa: T201 - the parent reads it
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    asyncio.run(main(parser.parse_args().latency))
