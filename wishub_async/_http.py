"""``Request`` and ``Response`` as middleware sees them: plain data, no HTTP library.

A ``Request`` is one logical API call before any key is chosen; a ``Response`` is the
settled answer after the retries, built whole in one place (``_pipeline``) and never
changed afterwards. Neither holds a key: the ``Authorization`` header is added per
attempt, below the middleware, and a key the server echoes is already replaced by its
redacted id in everything a ``Response`` carries (headers, content, streamed bytes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

__all__ = ["Body", "Handler", "Middleware", "Request", "Response"]


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


@attrs.frozen
class Request:
    """One logical API call, before a key is chosen. Frozen: use ``attrs.evolve``.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL, such as ``/models``; or, with ``at_root``,
            the path from the host's root.
        json: the JSON body, or None.
        stream: whether the caller reads the body as a stream.
        headers: extra headers for this call only.
        model: the model the call names (None for calls that name none): budgets
            and per-model key health follow it.
        at_root: whether ``path`` starts at the host's root instead of below the
            base URL (DashScope-style routes such as ``/api/v1/services/...``).
    """

    method: str
    path: str
    json: Any = None
    stream: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    model: str | None = None
    at_root: bool = False


class Body(Protocol):
    """The unread body of a streamed response (private plumbing of the pipeline)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the body's bytes as they arrive."""
        ...

    async def aclose(self, error: BaseException | None = None) -> None:
        """Release the connection; ``error`` is what ended the body early, if anything."""
        ...

    def release(self) -> None:
        """Settle the call without I/O (for a body abandoned without ``aclose``)."""
        ...

    def note_tokens(self, tokens: int) -> None:
        """The tokens the stream reported using."""
        ...


@attrs.frozen
class Response:
    """A successful (2xx) response, after the retries.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers (lower-case names).
        content: the whole body; empty for a stream, whose body is read with
            ``aiter_bytes``.
        label: the label of the key that produced it.
        attempts: how many HTTP attempts the call took.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    label: str
    attempts: int
    _body: Body | None = attrs.field(default=None, alias="body", repr=False, eq=False)

    @property
    def is_stream(self) -> bool:
        """Whether the body is still to be read (``aiter_bytes``, then ``aclose``)."""
        return self._body is not None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives (a read body at once)."""
        if self._body is None:
            return _Once(self.content)
        return aiter(self._body)

    async def aclose(self, error: BaseException | None = None) -> None:
        """Release a streamed body's connection; safe to call twice.

        Args:
            error: what ended the body early, if anything (it counts against the key).
        """
        if self._body is not None:
            await self._body.aclose(error)

    def release(self) -> None:
        """Give back a streamed body's concurrency slots without I/O (a finaliser may)."""
        if self._body is not None:
            self._body.release()

    def note_tokens(self, tokens: int) -> None:
        """Tell the key's rate budget the tokens a streamed call used (its usage chunk).

        A stream that never reports them keeps its whole reservation.
        """
        if self._body is not None:
            self._body.note_tokens(tokens)


Handler = Callable[[Request], Awaitable[Response]]
"""The rest of the chain: give it a request, await the response."""

Middleware = Callable[[Request, Handler], Awaitable[Response]]
"""``async def mw(request, call_next) -> Response``; runs once per call, outside retries."""


class _Once:
    """An async iterator of one piece of bytes (none if empty)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        content, self._content = self._content, b""
        if not content:
            raise StopAsyncIteration
        return content
