"""Response bodies as the pipeline hands them on: free of echoed keys, settled once.

``StreamBody`` is a streamed response's body: bytes pass on as they arrive with the
key replaced by its redacted id (a key split across two chunks included), and the
call is settled exactly once when it closes. ``scrubbed_headers`` does the same for
headers.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping

import anyio

from ._keys import AppKey
from ._wire import WireStream

__all__ = ["StreamBody", "close_abandoned", "error_body", "scrubbed_headers"]


class _BodyState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class StreamBody:
    """A streamed response's body: scrubbed of the key, settled exactly once.

    Bytes are passed on as they arrive, with the key replaced by its redacted id.
    A chunk that ends with the start of the key keeps that tail back until the next
    chunk shows whether the key follows (so a key split across two chunks is found
    too); nothing else is ever held back.
    """

    def __init__(self, stream: WireStream, key: AppKey, abandoned: list[StreamBody]) -> None:
        self._stream = stream
        self._key = key
        self._abandoned = abandoned
        self._held = b""
        self._state = _BodyState.OPEN
        self._settle: Callable[[BaseException | None, int | None], None] | None = None
        self._tokens: int | None = None

    def settle_with(self, settle: Callable[[BaseException | None, int | None], None]) -> None:
        """Call ``settle`` once, with what ended the body and its tokens, when it closes."""
        self._settle = settle

    def note_tokens(self, tokens: int) -> None:
        """The tokens the stream reported using (its usage chunk)."""
        self._tokens = tokens

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        key = self._key
        if not key.echoes:
            return await anext(self._stream)
        while True:
            chunk = await anext(self._stream, None)
            if chunk is None:
                if not self._held:
                    raise StopAsyncIteration
                held, self._held = self._held, b""
                return held
            data = key.scrub(self._held + chunk)
            keep = _partial_echo(data, key.echoes)
            self._held = data[len(data) - keep :] if keep else b""
            data = data[: len(data) - keep]
            if data:
                return data

    async def aclose(self, error: BaseException | None = None) -> None:
        if self._state is _BodyState.CLOSED:
            return
        self._state = _BodyState.CLOSED
        settle, self._settle = self._settle, None
        try:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
        finally:
            if settle is not None:
                settle(error, self._tokens)

    def release(self) -> None:
        """Settle now, without I/O; the client's next call closes the connection."""
        settle, self._settle = self._settle, None
        if settle is not None:
            settle(None, self._tokens)
        if self._state is _BodyState.OPEN:
            self._abandoned.append(self)


async def close_abandoned(abandoned: list[StreamBody]) -> None:
    with anyio.CancelScope(shield=True):
        while abandoned:
            await abandoned.pop().aclose()


def _partial_echo(data: bytes, echoes: tuple[bytes, ...]) -> int:
    """How many bytes at the end of ``data`` could be the start of an echoed key."""
    longest = 0
    for form in echoes:
        first = form[:1]
        position = data.find(first, max(len(data) - len(form) + 1, 0))
        while position != -1 and len(data) - position > longest:
            if form.startswith(data[position:]):
                longest = len(data) - position
                break
            position = data.find(first, position + 1)
    return longest


async def error_body(stream: WireStream) -> bytes:
    try:
        return await stream.read()
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()


def scrubbed_headers(headers: Mapping[str, str], key: AppKey) -> Mapping[str, str]:
    """The headers, with any value that echoes the key redacted (copied only then)."""
    echoes = key.echoed_texts
    if not echoes:
        return headers
    values = "\n".join(headers.values())  # one search through them all
    if not any(form in values for form in echoes):
        return headers
    scrubbed = {}
    for name, value in headers.items():
        for form in echoes:
            value = value.replace(form, key.redacted)  # noqa: PLW2901 - the scrubbed value
        scrubbed[name.lower()] = value
    return scrubbed
