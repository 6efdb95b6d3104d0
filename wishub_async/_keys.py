"""AppKeys, their health, and the ring that chooses one for each attempt.

A key is only a header: every key shares the client's one connection pool. The
secret lives in exactly one attribute (the prepared ``Authorization`` value), which
no repr, str, log line or exception ever shows.
"""

from __future__ import annotations

import enum
import json
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import anyio
import attrs

from ._errors import KeyEffect, error_name
from .exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    KeyUnavailableError,
    WishubError,
)

__all__ = ["AppKey", "KeyRing", "KeyState", "KeyStatus", "MustWait", "load_keys", "redact"]

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_ENV_KEY = "WISHUB_APP_KEY"
_SHOWN_TAIL = 4
_MIN_LEN_TO_SHOW_TAIL = 12
_SERVER_ERRORS_BEFORE_COOLING = 3
_SCAN_LIMIT = 32
_MIN_LEN_TO_SCRUB = 8


def redact(secret: str) -> str:
    """``…`` plus the last 4 characters; just ``…`` for keys too short to spare them."""
    return "…" + secret[-_SHOWN_TAIL:] if len(secret) >= _MIN_LEN_TO_SHOW_TAIL else "…"


class KeyState(enum.StrEnum):
    """Health of one AppKey."""

    HEALTHY = "healthy"
    """In rotation."""
    COOLING = "cooling"
    """Resting until a time (after a rate limit, a used-up quota, or server errors)."""
    QUARANTINED = "quarantined"
    """Out of rotation until ``check_keys()`` finds it working (after a rejection)."""


@attrs.frozen
class KeyStatus:
    """A snapshot of one key's health; it never holds the key itself.

    Attributes:
        label: the key's label (given, positional ``key-N``, or its redacted id).
        redacted: ``…`` plus the key's last 4 characters.
        state: healthy, cooling or quarantined.
        in_flight: requests using the key now (including those queued for it).
        successes: requests that succeeded with the key.
        failures: requests that failed with the key.
        last_error_type: the error type (or exception name) of the last failure.
        cooling_until: when a cooling key becomes usable again (UTC), else None.
        latency_avg: mean seconds per attempt with this key, None before the first.
    """

    label: str
    redacted: str
    state: KeyState
    in_flight: int
    successes: int
    failures: int
    last_error_type: str | None
    cooling_until: datetime | None
    latency_avg: float | None


@attrs.define(eq=False, repr=False)
class AppKey:
    """One AppKey with its live health counters (mutable, shared by all views)."""

    label: str
    redacted: str
    authorization: str
    limiter: anyio.CapacityLimiter | None = None
    in_flight: int = 0
    assigned: int = 0
    successes: int = 0
    failures: int = 0
    server_errors_in_row: int = 0
    latency_total: float = 0.0
    last_error_type: str | None = None
    last_api_error: APIError | None = None  # a copy without traceback, for refusal()
    quarantined: bool = False
    cooling_until: float = 0.0  # time.monotonic() value

    def __repr__(self) -> str:
        return f"<AppKey {self.label} {self.redacted} {self.state(time.monotonic())}>"

    def state(self, now: float) -> KeyState:
        """The state at monotonic time ``now``."""
        if self.quarantined:
            return KeyState.QUARANTINED
        return KeyState.COOLING if self.cooling_until > now else KeyState.HEALTHY

    def record_success(self, latency: float, *, recover: bool = False) -> None:
        """Count a success; with ``recover`` (a ``check_keys`` probe), lift quarantine."""
        self.successes += 1
        self.latency_total += latency
        self.server_errors_in_row = 0
        if recover:
            self.quarantined = False

    def record_failure(
        self,
        error: APIError | APIConnectionError,
        effect: KeyEffect,
        latency: float,
        *,
        transient: bool,
        cool_for: float,
        server_error_cooldown: float,
    ) -> None:
        """Count a failure and apply its effect on the key's health.

        Only transient failures (server errors, dropped connections, timeouts) count
        towards a brief cooling; a request the server rejected (400, 404) does not.
        """
        self.failures += 1
        self.latency_total += latency
        self.last_error_type = error_name(error)
        self.last_api_error = _bare_copy(error) if isinstance(error, APIError) else None
        now = time.monotonic()
        if effect is KeyEffect.QUARANTINE:
            self.quarantined = True
        elif effect is KeyEffect.NONE:
            if not transient:
                self.server_errors_in_row = 0
                return
            self.server_errors_in_row += 1
            if self.server_errors_in_row >= _SERVER_ERRORS_BEFORE_COOLING:
                self.server_errors_in_row = 0
                self.cooling_until = max(self.cooling_until, now + server_error_cooldown)
        else:
            self.cooling_until = max(self.cooling_until, now + cool_for)

    def scrub(self, content: bytes) -> bytes:
        """``content`` with this key replaced by its redacted id, for servers that echo it.

        The key is replaced as it is and in its JSON-escaped forms (quotes, backslashes
        and slashes escaped), since error bodies are JSON.
        Keys shorter than 8 characters are left alone: replacing them would garble text.
        """
        secret = self.authorization.removeprefix("Bearer ")
        if len(secret) < _MIN_LEN_TO_SCRUB:
            return content
        escaped = json.dumps(secret)[1:-1]
        for form in dict.fromkeys((escaped.replace("/", "\\/"), escaped, secret)):  # longest first
            content = content.replace(form.encode(), self.redacted.encode())
        return content

    def refusal(self, why: str) -> WishubError:
        """The error for a call this key will not take (quarantined, or cooling long).

        It is of the same class as the key's last error, with its status, type and
        code, and says that nothing was sent; ``KeyUnavailableError`` if there is none.
        """
        message = f"not sent: key {self.label} is {why}"
        last = self.last_api_error
        if last is None:
            reason = f" after {self.last_error_type}" if self.last_error_type else ""
            return KeyUnavailableError(message + reason, key=self.label)
        return _bare_copy(last, f"{message} after: {last.message}")

    def end_cooling(self) -> None:
        """Make a cooling key usable now (after someone waited out its cooling)."""
        self.cooling_until = 0.0

    def snapshot(self, now: float) -> KeyStatus:
        """A frozen, secret-free view of this key's health."""
        attempts = self.successes + self.failures
        cooling = self.cooling_until > now and not self.quarantined
        return KeyStatus(
            label=self.label,
            redacted=self.redacted,
            state=self.state(now),
            in_flight=self.in_flight,
            successes=self.successes,
            failures=self.failures,
            last_error_type=self.last_error_type,
            cooling_until=(
                datetime.fromtimestamp(time.time() + self.cooling_until - now, UTC)
                if cooling
                else None
            ),
            latency_avg=self.latency_total / attempts if attempts else None,
        )


def _bare_copy(error: APIError, message: str | None = None) -> APIError:
    """The error's class and fields, without its traceback, body or headers."""
    copy = type(error)(
        error.message if message is None else message,
        status_code=error.status_code,
        type=error.type,
        code=error.code,
        param=error.param,
        key=error.key,
    )
    copy.rule = error.rule
    return copy


def _load(key: AppKey) -> tuple[int, int]:
    return key.in_flight, key.assigned


class MustWait(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by ``KeyRing.pick`` when the only usable keys are cooling."""

    def __init__(self, key: AppKey, seconds: float) -> None:
        super().__init__(key.label, seconds)
        self.key = key
        self.seconds = seconds


def load_keys(
    app_key: str | None, app_keys: Sequence[str] | Mapping[str, str] | None
) -> list[tuple[str, str]]:
    """Validate the constructor's key arguments into ``(label, secret)`` pairs."""
    if app_key is not None and app_keys is not None:
        raise ConfigurationError("pass either app_key= or app_keys=, not both")
    if app_keys is not None:
        if isinstance(app_keys, str):
            raise ConfigurationError("app_keys= takes a list or a dict of keys; use app_key=")
        pairs = (
            [(str(label), secret) for label, secret in app_keys.items()]
            if isinstance(app_keys, Mapping)
            else [(f"key-{index}", secret) for index, secret in enumerate(app_keys)]
        )
        if not pairs:
            raise ConfigurationError("app_keys= is empty: give at least one AppKey")
    else:
        secret = app_key if app_key is not None else os.environ.get(_ENV_KEY)
        if secret is None:
            raise ConfigurationError(
                f"no AppKey: pass app_key=... or app_keys=[...], or set {_ENV_KEY}"
            )
        pairs = [("", secret)]
    checked = [(label or redact(secret), _check_secret(label, secret)) for label, secret in pairs]
    labels = [label for label, _ in checked]
    if len(set(labels)) != len(labels):
        raise ConfigurationError("key labels must be unique")
    return checked


def _check_secret(label: str, secret: object) -> str:
    name = f"AppKey {label!r}" if label else "the AppKey"
    if not isinstance(secret, str):
        raise ConfigurationError(f"{name} must be a str, not {type(secret).__name__}")
    if not secret:
        raise ConfigurationError(f"{name} is empty")
    if not _VISIBLE_ASCII.fullmatch(secret):
        raise ConfigurationError(
            f"{name} contains whitespace, control or non-ASCII characters;"
            " copy it again from the console"
        )
    return secret


class KeyRing:
    """All keys of one client, and the choice of a key for each attempt."""

    def __init__(
        self, pairs: Iterable[tuple[str, str]], *, per_key_concurrency: int | None
    ) -> None:
        self.keys = [
            AppKey(
                label=label,
                redacted=redact(secret),
                authorization=f"Bearer {secret}",
                limiter=anyio.CapacityLimiter(per_key_concurrency) if per_key_concurrency else None,
            )
            for label, secret in pairs
        ]
        self._by_label = {key.label: key for key in self.keys}

    def __repr__(self) -> str:
        return f"<KeyRing {len(self.keys)} keys>"

    @property
    def labels(self) -> list[str]:
        """Every key's label, in the order given."""
        return [key.label for key in self.keys]

    def get(self, label: str) -> AppKey:
        """The key with this label, or ``ConfigurationError`` naming the known ones."""
        try:
            return self._by_label[label]
        except KeyError:
            known = ", ".join(self.labels[:5]) + (", …" if len(self.keys) > 5 else "")  # noqa: PLR2004
            raise ConfigurationError(f"no key labelled {label!r} (known: {known})") from None

    def pick(self, pinned: AppKey | None, exclude: Sequence[AppKey] = ()) -> AppKey:
        """The key for the next attempt: least in flight among healthy keys.

        With more than ``_SCAN_LIMIT`` keys, the less loaded of two healthy keys drawn
        at random ("power of two choices": nearly as even, and O(1) instead of a scan
        of every key per attempt); the full scan is the fallback.

        Raises:
            MustWait: only cooling keys are left; wait, then ask again.
            KeyUnavailableError: no key can take the request at all.
        """
        now = time.monotonic()
        if pinned is not None:
            return self._usable(pinned, now)
        if len(self.keys) == 1:
            return self._usable(self.keys[0], now)
        if len(self.keys) > _SCAN_LIMIT:
            drawn = [
                key
                for key in (random.choice(self.keys), random.choice(self.keys))  # noqa: S311
                if not key.quarantined and key.cooling_until <= now and key not in exclude
            ]
            if drawn:
                return min(drawn, key=_load)
        best: AppKey | None = None
        for key in self.keys:
            if key.quarantined or key.cooling_until > now or key in exclude:
                continue
            if best is None or _load(key) < _load(best):
                best = key
        if best is not None:
            return best
        candidates = [key for key in self.keys if key not in exclude] or self.keys
        cooling = [key for key in candidates if not key.quarantined]
        if cooling:
            soonest = min(cooling, key=lambda key: key.cooling_until)
            raise MustWait(soonest, soonest.cooling_until - now)
        raise KeyUnavailableError(self.describe(candidates, now))

    def _usable(self, key: AppKey, now: float) -> AppKey:
        if key.quarantined:
            raise key.refusal("quarantined (check_keys() probes it again)")
        if key.cooling_until > now:
            raise MustWait(key, key.cooling_until - now)
        return key

    @staticmethod
    def describe(keys: Sequence[AppKey], now: float) -> str:
        """Why none of ``keys`` can be used, without naming any secret."""
        shown = [
            f"{key.label} {key.state(now)}"
            + (f" after {key.last_error_type}" if key.last_error_type else "")
            for key in keys[:5]
        ]
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""  # noqa: PLR2004
        return f"no usable AppKey: {'; '.join(shown)}{more}"

    def status(self) -> list[KeyStatus]:
        """A snapshot per key, in the order given."""
        now = time.monotonic()
        return [key.snapshot(now) for key in self.keys]
