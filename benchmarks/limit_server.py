"""A loopback embeddings server that enforces per-key, per-model request limits.

``POST /v1/embeddings`` counts each call when it *arrives*, per key (the bearer
token) and model, with ``wishub_async.testing.FakeLimit`` (the fake's own window
styles: ``sliding``, ``fixed``, ``bucket``). A call within the limit waits
``--latency`` seconds and gets a small embedding with its ``usage``; a call past it
gets at once a 429 ``rate_limit_exceeded`` with a ``Retry-After`` that says when it
would fit, as the platform (and the fake) answer.

The benchmark drives it through two control routes, which need no key:

- ``POST /bench/reset`` with ``{"style", "requests", "per"}`` starts a fresh limit
  and fresh counts;
- ``GET /bench/stats`` answers the counts since the reset: accepted and rejected
  calls, the calls accepted per key, the most any key had accepted in one window
  (``per`` seconds, sliding), and a trace of both counts per ``--bin`` seconds from
  the first call that arrived.

It runs in its own process (on uvloop when installed), so the clients' CPU does not
slow it, and prints its base URL on stdout::

    python benchmarks/limit_server.py --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from wishub_async.testing import FakeLimit, LimitStyle

__all__ = ["LimitServer", "main"]

_VECTOR = [0.125, -0.25, 0.5, -0.0625, 0.75, -0.375, 0.0, 1.0]
_STYLES: tuple[LimitStyle, ...] = ("sliding", "fixed", "bucket")


class LimitServer:
    """The limit, its counts since the last reset, and the HTTP handlers."""

    def __init__(self, latency: float, bin_seconds: float) -> None:
        self.latency = latency
        self.bin_seconds = bin_seconds
        self.limit = FakeLimit(requests=10, per=2.0, style="sliding")
        self.arrivals: dict[str, list[float]] = defaultdict(list)  # key -> accepted times
        self.rejections: list[float] = []

    def app(self) -> web.Application:
        """The aiohttp application: the embeddings route and the control routes."""
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/bench/reset", self.reset)
        app.router.add_get("/bench/stats", self.stats)
        return app

    async def embeddings(self, request: web.Request) -> web.Response:
        """Count the call; answer it after the latency, or refuse it at once."""
        now = time.monotonic()
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        payload = await request.json()
        model = str(payload.get("model", ""))
        wait = self.limit.admit(key, model, now)
        if wait is not None:
            self.rejections.append(now)
            body = {
                "error": {
                    "code": None,
                    "type": "rate_limit_exceeded",
                    "message": f"Rate limit reached for {model} on this key; retry later",
                }
            }
            return web.json_response(
                body, status=429, headers={"Retry-After": f"{max(wait, 0.0):.3f}"}
            )
        self.arrivals[key].append(now)
        await asyncio.sleep(self.latency)
        inputs = payload.get("input", "")
        texts = inputs if isinstance(inputs, list) else [inputs]
        tokens = sum(len(str(text)) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": index, "embedding": _VECTOR}
                    for index in range(len(texts))
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        """A fresh limit (``style``, ``requests``, ``per``) and fresh counts."""
        options = await request.json()
        style = options["style"]
        if style not in _STYLES:
            raise web.HTTPBadRequest(text=f"style must be one of {_STYLES}")
        self.limit = FakeLimit(
            requests=int(options["requests"]), per=float(options["per"]), style=style
        )
        self.arrivals.clear()
        self.rejections.clear()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        """The counts since the last reset (see the module's docstring)."""
        del request
        return web.json_response(self.summary())

    def summary(self) -> dict[str, Any]:
        """Accepted and rejected calls, per key and per time bin since the reset."""
        per = self.limit.per
        starts = [times[0] for times in self.arrivals.values()] + self.rejections[:1]
        zero = min(starts, default=0.0)
        accepted_bins: Counter[int] = Counter()
        most_in_window = 0
        for times in self.arrivals.values():
            for index, at in enumerate(times):
                accepted_bins[int((at - zero) / self.bin_seconds)] += 1
                # the calls of this key that arrived in the window of `per` ending at `at`
                oldest = bisect.bisect_right(times, at - per, 0, index)
                most_in_window = max(most_in_window, index - oldest + 1)
        rejected_bins = Counter(int((at - zero) / self.bin_seconds) for at in self.rejections)
        bins = max([*accepted_bins, *rejected_bins], default=-1) + 1
        return {
            "accepted": self.limit.accepted,
            "rejected": self.limit.rejected,
            "accepted_per_key": {key[-6:]: len(times) for key, times in self.arrivals.items()},
            "most_in_one_window": most_in_window,
            "bin_seconds": self.bin_seconds,
            "accepted_trace": [accepted_bins[index] for index in range(bins)],
            "rejected_trace": [rejected_bins[index] for index in range(bins)],
        }


async def serve(latency: float, bin_seconds: float, port: int) -> None:
    """Serve until SIGTERM or SIGINT; print the base URL first."""
    runner = web.AppRunner(LimitServer(latency, bin_seconds).app(), access_log=None)
    await runner.setup()
    listening = socket.create_server(("127.0.0.1", port), backlog=4096)
    await web.SockSite(runner, listening).start()
    print(f"http://127.0.0.1:{listening.getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve (on uvloop when it is installed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per accepted call")
    parser.add_argument("--bin", type=float, default=0.5, help="seconds per trace bin")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, installed by `nox -s bench`
    except ImportError:
        asyncio.run(serve(args.latency, args.bin, args.port))
    else:
        uvloop.run(serve(args.latency, args.bin, args.port))


if __name__ == "__main__":
    main(sys.argv[1:])
