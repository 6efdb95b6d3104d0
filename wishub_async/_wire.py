"""The transport seam: one ``WireRequest`` in, one ``WireResponse`` out.

A transport (``_httpx``, ``_aiohttp``) is the only module that imports its HTTP
library. It translates that library's errors in one context manager wrapped around
every await that touches the wire (sending, reading a body, reading a stream), so
everything above it sees only our exceptions:

- ``APIConnectionError`` (``APITimeoutError`` for timeouts): no usable answer;
- ``ClientClosedError``: the transport was closed while the call was in flight;
- ``ClientStateError``: the transport cannot be used here (closed, another event loop).

``aclose()`` ends every send and stream read still in flight, promptly, with
``ClientClosedError``: no call outlives it, and no socket either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import attrs

from ._timeout import Timeout

__all__ = ["Transport", "WireRequest", "WireResponse", "WireStream"]


@attrs.frozen(slots=True)
class WireRequest:
    """One HTTP attempt, ready to send: the key is in ``headers``; ``label`` names it."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes | None
    timeout: Timeout
    stream: bool
    label: str


class WireStream(Protocol):
    """A response body still on the wire: an async iterator of its bytes."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The stream itself."""
        ...

    async def __anext__(self) -> bytes:
        """The next bytes as they arrive; our exceptions only."""
        ...

    async def read(self) -> bytes:
        """Read the rest of the body, then release the connection."""
        ...

    async def aclose(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        ...


@attrs.define(slots=True)
class WireResponse:
    """What came back: status, headers, and the body (read, or still on the wire)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes = b""
    stream: WireStream | None = None


class Transport(Protocol):
    """What the client needs from an HTTP library."""

    async def send(self, request: WireRequest) -> WireResponse:
        """Send one attempt; read the body unless ``request.stream``."""
        ...

    async def aclose(self) -> None:
        """End every send and read in flight, then close the pool if it is ours."""
        ...
