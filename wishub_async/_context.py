"""What a pipeline is made of, and what resources call it with.

The client's shared parts (``Shared``: pool, keys, limits, lifecycle, state), a
view's ``Settings``, a call's ``Expect`` (private plumbing middleware never sees), and
``Send``, the callable resources get.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import attrs

from ._budget import NO_LIMITS, Limits
from ._errors import ErrorTable
from ._events import Hooks
from ._http import Request, Response
from ._keys import KeyRing
from ._retry import RetryPolicy
from ._state import LocalState, State
from ._timeout import Timeout
from ._wire import Transport
from .exceptions import ClientStateError

if TYPE_CHECKING:
    from ._body import StreamBody

__all__ = [
    "JSON",
    "CallRecord",
    "Expect",
    "LifeState",
    "Lifecycle",
    "Send",
    "Settings",
    "Shared",
]


class LifeState(enum.Enum):
    """Where a client is in its life."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@attrs.define(eq=False)
class Lifecycle:
    """One client's state, shared by its views."""

    state: LifeState = LifeState.UNOPENED
    entered: bool = False  # `async with` ran (a first call also opens, implicitly)

    def is_closed(self) -> bool:
        """Whether ``aclose()`` has begun (a call: it may change across an await)."""
        return self.state is LifeState.CLOSED

    def check(self) -> None:
        """Open an unopened client; refuse a closed one."""
        if self.state is not LifeState.OPEN:
            if self.state is LifeState.CLOSED:
                raise ClientStateError("this AsyncWishub is closed; create a new one")
            self.state = LifeState.OPEN


@attrs.define(eq=False)
class Shared:
    """What every view of one client shares: the pool, the keys, the limits, the life."""

    transport: Transport
    ring: KeyRing
    limiter: anyio.CapacityLimiter
    lifecycle: Lifecycle
    max_concurrency: int
    owned: bool
    state: State = attrs.field(factory=LocalState)
    abandoned: list[StreamBody] = attrs.field(factory=list)
    """Stream bodies left without ``aclose`` (a ``break``): the next call closes them."""


@attrs.frozen
class Settings:
    """What a view's calls are sent with; a view builds it once."""

    base_url: str
    root_url: str
    timeout: Timeout
    retry: RetryPolicy
    error_table: ErrorTable
    headers: Mapping[str, str]
    hooks: Hooks
    limits: Limits = NO_LIMITS
    token_counter: Callable[[Request], int] | None = None
    """The caller's ``token_counter=``; None: ``estimate_tokens`` of the body."""
    json_headers: Mapping[str, str] = attrs.field(init=False)
    """``headers`` and the JSON content type, for calls with a body."""

    @json_headers.default
    def _json_headers(self) -> Mapping[str, str]:
        return {**self.headers, "content-type": "application/json"}


@attrs.frozen
class Expect:
    """Per-call plumbing that middleware never sees: what a good answer looks like.

    Attributes:
        accept: run on a streamed 2xx response inside the retry loop (a stream reads
            its first chunk there); raising ``APIError`` or ``APIConnectionError``
            fails the attempt, which is then retried like any other failure.
        first_chunk_timeout: seconds an attempt of a stream may take up to its
            accepted start (headers and first chunk), or None.
        deadline: the ``_clock`` time by which the whole call must have started
            (a stream's ``stream_timeout``), or None.
    """

    accept: Callable[[Response], Awaitable[None]] | None = None
    first_chunk_timeout: float | None = None
    deadline: float | None = None


JSON = Expect()
"""A whole JSON answer: the default."""


class Send(Protocol):
    """What resources call: a view's way into the pipeline (through its middleware)."""

    def __call__(self, request: Request, expect: Expect = ...) -> Awaitable[Response]:
        """Send ``request``; ``expect`` says what a good answer looks like."""
        ...


@attrs.define
class CallRecord:
    """What the calls of a tracked view did (for ``fan_out`` and ``map`` outcomes)."""

    attempts: int = 0
    label: str | None = None
