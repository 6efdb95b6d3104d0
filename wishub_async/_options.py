"""A client's options, checked once: what ``AsyncWishub()`` and ``with_options()`` take.

Every check raises ``ConfigurationError`` naming the option, before anything is opened.
"""

from __future__ import annotations

import enum
import ipaddress
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

import attrs

from ._budget import Limits
from ._context import (
    Settings,
)
from ._errors import ErrorTable
from ._events import Hooks
from ._http import Middleware, Request
from ._rerank import DEFAULT_RERANK_ROUTES, RerankRoutes
from ._retry import RetryPolicy
from ._state import State
from ._timeout import Timeout
from ._version import __version__
from .exceptions import ConfigurationError

__all__ = [
    "UNCHANGED",
    "Options",
    "Unchanged",
    "check_count",
    "check_headers",
    "check_state",
    "type_check",
]


class Unchanged(enum.Enum):
    """The typed default of ``with_options``: keep the current value."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def type_check(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigurationError(f"{name}= takes a {names}, not {type(value).__name__}")


@attrs.frozen
class Options:
    """A view's options, checked once; ``with_options`` evolves them."""

    base_url: str
    timeout: Timeout
    retry: RetryPolicy
    headers: Mapping[str, str]
    middleware: tuple[Middleware, ...]
    hooks: Hooks
    error_table: ErrorTable
    allow_http: bool
    limits: Limits
    token_counter: Callable[[Request], int] | None
    rerank_routes: RerankRoutes = DEFAULT_RERANK_ROUTES
    flatten_text_parts: bool = False

    @classmethod
    def checked(
        cls,
        *,
        base_url: object,
        timeout: object,
        retry: object,
        headers: object,
        middleware: object,
        hooks: object,
        error_table: object,
        allow_http: object,
        limits: object,
        token_counter: object,
        rerank_routes: object = DEFAULT_RERANK_ROUTES,
        flatten_text_parts: object = False,
    ) -> Options:
        """The options, or ``ConfigurationError`` naming the first one that is wrong."""
        type_check("allow_http", allow_http, bool)
        type_check("rerank_routes", rerank_routes, RerankRoutes)
        type_check("flatten_text_parts", flatten_text_parts, bool)
        type_check("retry", retry, RetryPolicy)
        type_check("hooks", hooks, Hooks)
        type_check("error_table", error_table, ErrorTable)
        if not isinstance(middleware, Iterable) or not all(map(callable, middleware)):
            raise ConfigurationError("middleware= takes a list of async callables")
        if token_counter is not None and not callable(token_counter):
            raise ConfigurationError("token_counter= takes a function of a Request")
        return cls(
            base_url=_check_base_url(base_url, allow_http=bool(allow_http)),
            timeout=Timeout.coerce(timeout),
            retry=retry,  # type: ignore[arg-type]  # checked above
            headers=check_headers(headers),
            middleware=tuple(middleware),
            hooks=hooks,  # type: ignore[arg-type]
            error_table=error_table,  # type: ignore[arg-type]
            allow_http=bool(allow_http),
            limits=limits if isinstance(limits, Limits) else Limits.of(limits),
            token_counter=token_counter,
            rerank_routes=rerank_routes,  # type: ignore[arg-type]
            flatten_text_parts=bool(flatten_text_parts),
        )

    def settings(self) -> Settings:
        """What the pipeline sends with."""
        parts = urllib.parse.urlsplit(self.base_url)
        headers = {
            "accept": "application/json",
            "accept-encoding": "gzip, deflate",
            "user-agent": f"wishub-async/{__version__}",
            **{name.lower(): value for name, value in self.headers.items()},
        }
        return Settings(
            base_url=self.base_url,
            root_url=f"{parts.scheme}://{parts.netloc}",
            timeout=self.timeout,
            retry=self.retry,
            error_table=self.error_table,
            headers=headers,
            hooks=self.hooks,
            limits=self.limits,
            token_counter=self.token_counter,
        )


_STATE_METHODS = ("reserve", "settle", "report", "refresh", "aclose")


def check_state(state: object) -> State:
    if not all(callable(getattr(state, name, None)) for name in _STATE_METHODS):
        raise ConfigurationError(
            "state= takes a wishub_async.redis.RedisState (or another State),"
            f" not {type(state).__name__}"
        )
    return state  # type: ignore[return-value]  # it has every method of the protocol


def check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}")


def check_headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers= takes a mapping, not {type(headers).__name__}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError("header names and values must be strings")
        if name.lower() == "authorization":
            raise ConfigurationError(
                "set keys with app_key=/app_keys=, not an Authorization header"
            )
        if not _visible(name) or not _visible(value, space=True):
            raise ConfigurationError(f"header {name!r} has control or non-ASCII characters")
        checked[name] = value
    return checked


def _visible(text: str, *, space: bool = False) -> bool:
    low = 0x20 if space else 0x21
    return bool(text) and all(low <= ord(char) <= 0x7E for char in text)  # noqa: PLR2004


def _check_base_url(base_url: object, *, allow_http: bool) -> str:
    if not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a str, not {type(base_url).__name__}")
    try:
        url = urllib.parse.urlsplit(base_url.strip())
        host = url.hostname
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"base_url {base_url!r} is not a valid URL: {exc}") from None
    if "@" in url.netloc:
        raise ConfigurationError("base_url must not hold credentials; keys go in app_key=")
    if url.scheme not in {"http", "https"} or not host:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if url.query or url.fragment or base_url.rstrip().endswith(("?", "#")):
        raise ConfigurationError(
            f"base_url {base_url!r} has a query or a fragment; give the API root only,"
            " such as https://wishub-x1.ctyun.cn/v1"
        )
    if not _visible(base_url.strip()):
        raise ConfigurationError(f"base_url {base_url!r} has spaces or control characters")
    if url.scheme == "http" and not allow_http and not _is_loopback(host):
        raise ConfigurationError(
            f"refusing to send AppKeys over plain http to {host}; use https,"
            " or pass allow_http=True if you really mean it"
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
