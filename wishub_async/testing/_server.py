"""A small HTTP/1.1 server on loopback that puts a ``FakeWishub`` on a real socket.

It speaks just enough HTTP/1.1 for clients: keep-alive, ``Content-Length`` request
bodies, ``Content-Length`` or chunked replies, and real connection drops and resets.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx
from anyio.streams.tls import TLSListener

from ._replies import CUT_BODY

if TYPE_CHECKING:
    from ._fake import FakeWishub
    from ._replies import Reply

__all__ = ["serve"]

_MAX_HEAD = 64 * 1024


@asynccontextmanager
async def serve(fake: FakeWishub, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``fake`` on 127.0.0.1 on a free port; yield its base URL (``.../v1``).

    With ``tls`` (a server-side ``ssl.SSLContext``) it speaks HTTPS.
    """
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = (
        tcp if tls is None else TLSListener(tcp, tls, standard_compatible=False)
    )
    scheme = "http" if tls is None else "https"

    async def handle(stream: anyio.abc.ByteStream) -> None:
        fake.connections_opened += 1
        fake.open_connections += 1
        try:
            async with stream:
                await _connection(fake, stream)
        finally:
            fake.open_connections -= 1

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        try:
            yield f"{scheme}://127.0.0.1:{port}/v1"
        finally:
            group.cancel_scope.cancel()


async def _connection(fake: FakeWishub, stream: anyio.abc.ByteStream) -> None:
    buffer = b""
    while True:
        try:
            request, buffer = await _read_request(stream, buffer)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError):
            return
        carry_on, more = await _exchange_unless_hung_up(fake, stream, request)
        buffer += more
        if not carry_on or request[2].get("connection", "").lower() == "close":
            return


def _path_of(target: str) -> str:
    """A request target's path; an absolute one (sent to a proxy) answered as if proxied."""
    path = target.split("?", maxsplit=1)[0]
    if path.startswith(("http://", "https://")):
        start = path.find("/", path.index("//") + 2)
        path = "/" if start < 0 else path[start:]
    return path


async def _exchange_unless_hung_up(
    fake: FakeWishub,
    stream: anyio.abc.ByteStream,
    request: tuple[str, str, dict[str, str], bytes],
) -> tuple[bool, bytes]:
    """Answer one request; whether the connection goes on, and bytes that came meanwhile.

    A real server notices a client that hangs up, while it is still thinking or in the
    middle of a slow body; so does this one, which lets tests check that no connection
    outlives a client's ``aclose()``.
    """
    method, target, headers, body = request
    carry_on = False
    early = bytearray()

    async with anyio.create_task_group() as group:

        async def exchange() -> None:
            nonlocal carry_on
            reply = await fake.answer(method, _path_of(target), headers, body)
            carry_on = await _reply(stream, reply)
            group.cancel_scope.cancel()

        async def watch() -> None:
            try:
                while True:
                    early.extend(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                group.cancel_scope.cancel()

        group.start_soon(exchange)
        group.start_soon(watch)
    return carry_on, bytes(early)


async def _reply(stream: anyio.abc.ByteStream, reply: Reply) -> bool:
    """Send the reply (or the scripted drop); whether the connection can go on."""
    if reply.drop in {"drop", "reset"}:
        if reply.drop == "reset":
            _reset(stream)
        return False
    try:
        return await _send(stream, reply)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, httpx.HTTPError):
        return False  # httpx.HTTPError: a scripted drop in the middle of a streamed body


async def _read_request(
    stream: anyio.abc.ByteStream, buffer: bytes
) -> tuple[tuple[str, str, dict[str, str], bytes], bytes]:
    """One request from the connection: ((method, target, headers, body), rest)."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("request head too large")
        buffer += await stream.receive()
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        buffer += await stream.receive()
    return (method, target, headers, buffer[:length]), buffer[length:]


async def _send(stream: anyio.abc.ByteStream, reply: Reply) -> bool:
    """Write one reply; False when the connection must close (a scripted drop)."""
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = ""
    head = [f"HTTP/1.1 {reply.status} {reason}"]
    head += [f"{name}: {value}" for name, value in reply.headers.items()]
    if reply.drop in {"drop_mid_body", "reset_after_headers"}:
        cut = CUT_BODY if reply.drop == "drop_mid_body" else b""
        head.append(f"content-length: {len(CUT_BODY) * 4}")
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode() + cut)
        if reply.drop == "reset_after_headers":
            _reset(stream)
        return False
    if isinstance(reply.body, bytes):
        head.append(f"content-length: {len(reply.body)}")
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode() + reply.body)
        return True
    head.append("transfer-encoding: chunked")
    await stream.send(("\r\n".join(head) + "\r\n\r\n").encode())
    try:
        async for chunk in reply.body:
            if chunk:
                await stream.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    finally:
        closer = getattr(reply.body, "aclose", None)
        if closer is not None:
            with anyio.CancelScope(shield=True):
                await closer()
    await stream.send(b"0\r\n\r\n")
    return True


def _reset(stream: anyio.abc.ByteStream) -> None:
    """Make the coming close a TCP reset (RST) instead of an orderly FIN."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
