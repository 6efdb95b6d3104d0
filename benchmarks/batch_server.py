"""A fast loopback chat platform for the batch benchmark: raw asyncio, HTTP/1.1 keep-alive.

``POST /v1/chat/completions`` answers a fixed small completion (any key) after
``--latency`` seconds, and counts requests per custom_id (the text of the request's
last message, found without parsing the JSON). ``GET /stats`` answers
``{"requests", "resent", "connections"}``: requests in all, requests beyond the
first per custom_id, and open connections besides the asking one. It prints its
port on stdout and runs on uvloop when that is installed.

    python benchmarks/batch_server.py [--latency 0.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from typing import ClassVar

from server import run_fast, serve

__all__ = ["main"]

_CONTENT = re.compile(rb'"content":\s*"([^"]*)"')
_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
).encode()


def _response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: bench\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


ANSWER = _response(_BODY)


class Stats:
    counts: ClassVar[Counter[bytes]] = Counter()
    connections = 0


class Protocol(asyncio.Protocol):
    """Reads requests (head, then ``Content-Length`` bytes), answers each in order."""

    latency = 0.0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        Stats.connections += 1

    def connection_lost(self, _: Exception | None) -> None:
        Stats.connections -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower() + b"\r\n"
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"get /stats"):
            counts = Stats.counts
            stats = {
                "requests": sum(counts.values()),
                "resent": sum(count - 1 for count in counts.values()),
                "connections": Stats.connections - 1,
            }
            self.send(_response(json.dumps(stats).encode()))
            return
        found = _CONTENT.findall(body)
        Stats.counts[found[-1] if found else b""] += 1
        if self.latency:
            asyncio.get_running_loop().call_later(self.latency, self.send, ANSWER)
        else:
            self.send(ANSWER)

    def send(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0)
    Protocol.latency = parser.parse_args().latency
    run_fast(serve(0, Protocol))


if __name__ == "__main__":
    main()
