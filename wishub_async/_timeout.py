"""``Timeout``: the limits of one HTTP attempt, in the SDK's own terms.

Both transports read this one type, so neither the aiohttp transport nor the retry
policy needs httpx, and ``timeout=`` means the same on either backend.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from .exceptions import ConfigurationError

__all__ = ["DEFAULT_TIMEOUT", "Timeout"]

_PHASES = ("connect", "read", "write", "pool")


def _seconds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"timeout {attribute.name} must be a number of seconds or None,"
            f" not {type(value).__name__}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"timeout {attribute.name} must be a finite number of seconds above 0, got {value!r}"
        )


@attrs.frozen
class Timeout:
    """How long one HTTP attempt may wait in each phase, in seconds (None: no limit).

    ``timeout=30`` on the client sets every phase to 30 s. The default waits 10 s to
    connect and 600 s in every other phase, since reasoning models answering without
    streaming can take many minutes.

    Attributes:
        connect: to open a connection (TCP and TLS).
        read: between two reads of the response, the wait for its headers included.
        write: between two writes of the request body (the httpx transport only:
            aiohttp has no write timeout).
        pool: to get a free connection from the pool.
    """

    connect: float | None = attrs.field(default=10.0, validator=_seconds, kw_only=True)
    read: float | None = attrs.field(default=600.0, validator=_seconds, kw_only=True)
    write: float | None = attrs.field(default=600.0, validator=_seconds, kw_only=True)
    pool: float | None = attrs.field(default=600.0, validator=_seconds, kw_only=True)

    @classmethod
    def every(cls, seconds: float | None) -> Timeout:
        """The same limit for every phase."""
        return cls(connect=seconds, read=seconds, write=seconds, pool=seconds)

    @classmethod
    def coerce(cls, value: Any) -> Timeout:
        """A ``Timeout`` from what ``timeout=`` accepts.

        That is a ``Timeout``, a number of seconds for every phase, None for the
        default, or an ``httpx.Timeout`` (read by its four attributes).

        Raises:
            ConfigurationError: anything else, or a phase that is not a finite
                number of seconds above 0.
        """
        if value is None:
            return DEFAULT_TIMEOUT
        if isinstance(value, Timeout):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls.every(value)
        if all(hasattr(value, phase) for phase in _PHASES):  # httpx.Timeout, or alike
            return cls(**{phase: getattr(value, phase) for phase in _PHASES})
        raise ConfigurationError(
            f"timeout= takes seconds, a wishub_async.Timeout or an httpx.Timeout,"
            f" not {type(value).__name__}"
        )


DEFAULT_TIMEOUT = Timeout()
"""10 s to connect, 600 s for every other phase."""
