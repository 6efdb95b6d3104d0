"""A fast loopback wishub for benchmarks: a raw asyncio protocol, HTTP/1.1 keep-alive.

``GET /v1/models`` answers a fixed model list and ``POST /v1/embeddings`` a fixed
embedding (any key is accepted, any body), after
``--latency`` seconds if given; ``GET /stats`` answers how many connections and
requests the server has seen. Requests are parsed
just enough to find their end and their path, pipelined requests included. It runs in
its own process (``python benchmarks/server.py``), on uvloop when that is installed,
and prints its port on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["MODELS", "MODEL_COUNT", "main", "run_fast", "serve"]

T = TypeVar("T")

MODEL_COUNT = 40
MODELS = {
    "object": "list",
    "data": [
        {
            "id": f"{index:032x}" if index % 2 else f"测试模型名称{index}",
            "object": "model",
            "created": "" if index % 3 else 1700000000 + index,
            "owned_by": "" if index % 2 else "ctyun",
        }
        for index in range(MODEL_COUNT)
    ],
}


def _response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-Request-Id: bench\r\n"
        b"\r\n" + body
    )


MODELS_RESPONSE = _response(json.dumps(MODELS, ensure_ascii=False).encode())
EMBEDDING = {
    "object": "list",
    "model": "bge-m3",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.125] * 16}],
    "usage": {"prompt_tokens": 3, "total_tokens": 3},
}
EMBEDDING_RESPONSE = _response(json.dumps(EMBEDDING).encode())
NOT_FOUND = _response(b'{"error":{"type":"not_found","message":"no such path"}}', b"404 Not Found")


class Stats:
    connections = 0
    requests = 0
    latency = 0.0


class HTTPProtocol(asyncio.Protocol):
    """Answers each complete request in the buffer; keeps the connection open."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        Stats.connections += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies = []
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            # The path is the second word of the first line; a body (POST) has a length.
            line_end = buffer.find(b"\r\n", start)
            path = buffer[start:line_end].split(b" ", 2)[1]
            head = buffer[line_end:end].lower() + b"\r\n"
            at = head.find(b"\r\ncontent-length:")
            size = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
            if end + 4 + size > len(buffer):
                break  # the body has not all come yet
            replies.append(self.reply(path))
            start = end + 4 + size
        self.buffer = buffer[start:]
        if replies and self.transport is not None:
            Stats.requests += len(replies)
            reply = b"".join(replies) if len(replies) > 1 else replies[0]
            if Stats.latency:
                asyncio.get_running_loop().call_later(Stats.latency, self.write, reply)
            else:
                self.transport.write(reply)

    def write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)

    @staticmethod
    def reply(path: bytes) -> bytes:
        if path.endswith(b"/models"):
            return MODELS_RESPONSE
        if path.endswith(b"/embeddings"):
            return EMBEDDING_RESPONSE
        if path == b"/stats":
            stats = {"connections": Stats.connections, "requests": Stats.requests}
            return _response(json.dumps(stats).encode())
        return NOT_FOUND


async def serve(port: int, protocol: Callable[[], asyncio.Protocol] = HTTPProtocol) -> None:
    """Serve ``protocol`` on 127.0.0.1 (port 0: a free one), print the port, until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the server and load generator only)."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, installed by `nox -s bench`
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args(argv)
    Stats.latency = args.latency
    run_fast(serve(args.port))


if __name__ == "__main__":
    main(sys.argv[1:])
