"""AppKeys, their health, and the ring that chooses one for each attempt.

A key is only a header: every key shares the client's one connection pool. The
secret lives in exactly one attribute (the prepared ``Authorization`` value), which
no repr, str, log line or exception ever shows. Every change to a key's health goes
through a ``KeyRing`` method, which says what changed so the caller can report it.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import anyio
import attrs

from . import _clock
from ._budget import Budget
from ._errors import KeyEffect, error_name
from ._retry import non_negative
from ._status import KeyState, KeyStatus
from .exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    KeyUnavailableError,
    WishubError,
)

__all__ = [
    "AppKey",
    "KeyPolicy",
    "KeyRing",
    "KeyState",
    "KeyStatus",
    "StateChange",
    "Wait",
    "load_keys",
    "redact",
]

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_ENV_KEY = "WISHUB_APP_KEY"
_SHOWN_TAIL = 4
_MIN_LEN_TO_SHOW_TAIL = 12
_SCAN_LIMIT = 32
_MIN_LEN_TO_SCRUB = 8
_SHOWN_LABELS = 5


def redact(secret: str) -> str:
    """``…`` plus the last 4 characters; just ``…`` for keys too short to spare them."""
    return "…" + secret[-_SHOWN_TAIL:] if len(secret) >= _MIN_LEN_TO_SHOW_TAIL else "…"


def _moves(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen
class KeyPolicy:
    """How keys rest after errors, and how often one call moves between keys.

    Attributes:
        max_key_moves: how often one call may move to another key after a rate limit
            or a quota error (a limit may be platform-wide). Moving away from a key
            that rejected the call is not counted: each wrong key is met once.
        quota_cooldown: how long a key rests after a quota error (the whole key for
            ``insufficient_quota``; only the call's model for a spent free quota).
        server_error_cooldown: how long a key rests after server errors in a row.
        server_errors_before_cooling: how many server errors in a row make it rest.
    """

    max_key_moves: int = attrs.field(default=3, validator=_moves)
    quota_cooldown: float = attrs.field(default=300.0, validator=non_negative)
    server_error_cooldown: float = attrs.field(default=1.0, validator=non_negative)
    server_errors_before_cooling: int = attrs.field(default=3, validator=_moves)


@attrs.frozen
class StateChange:
    """A key's state moved from ``old`` to ``new`` (for the hooks)."""

    key: AppKey
    old: KeyState
    new: KeyState


@attrs.frozen
class Wait:
    """No key can take the call now; ``key`` is the one free soonest, in ``seconds``.

    ``budget`` is set when the key's rate budget is what the call waits for.
    """

    key: AppKey
    seconds: float
    until: float
    budget: Budget | None = None


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
    cooling_until: float = 0.0  # _clock.now() value
    resting: dict[str, float] = attrs.Factory(dict)  # model -> _clock.now() value
    budgets: dict[str, Budget] = attrs.Factory(dict)  # model -> its rate budget
    echoes: tuple[bytes, ...] = ()  # the forms of the secret a server may echo
    echoed_texts: tuple[str, ...] = ()  # the same, as text (for header values)

    def __attrs_post_init__(self) -> None:
        secret = self.authorization.removeprefix("Bearer ")
        if len(secret) >= _MIN_LEN_TO_SCRUB:
            escaped = json.dumps(secret)[1:-1]
            forms = dict.fromkeys((escaped.replace("/", "\\/"), escaped, secret))
            self.echoed_texts = tuple(forms)  # longest first
            self.echoes = tuple(form.encode() for form in forms)

    def __repr__(self) -> str:
        return f"<AppKey {self.label} {self.redacted} {self.state(_clock.now())}>"

    def state(self, now: float) -> KeyState:
        """The state at clock time ``now``."""
        if self.quarantined:
            return KeyState.QUARANTINED
        return KeyState.COOLING if self.cooling_until > now else KeyState.HEALTHY

    def free_at(self, model: str | None) -> float:
        """When the key can take a call for ``model`` (inf while quarantined)."""
        if self.quarantined:
            return float("inf")
        if model is not None and self.resting:
            return max(self.cooling_until, self.resting.get(model, 0.0))
        return self.cooling_until

    def scrub(self, content: bytes) -> bytes:
        """``content`` with this key replaced by its redacted id, for servers that echo it.

        The key is replaced as it is and in its JSON-escaped forms (quotes, backslashes
        and slashes escaped). Keys shorter than 8 characters are left alone:
        replacing them would garble text.
        """
        for form in self.echoes:
            if form in content:
                content = content.replace(form, self.redacted.encode())
        return content

    def refusal(self, why: str) -> WishubError:
        """The error for a call this key will not take (quarantined, or resting long).

        It is of the same class as the key's last error, with its status, type and
        code, and says that nothing was sent; ``KeyUnavailableError`` if there is none.
        """
        message = f"not sent: key {self.label} is {why}"
        last = self.last_api_error
        if last is None:
            reason = f" after {self.last_error_type}" if self.last_error_type else ""
            return KeyUnavailableError(message + reason, label=self.label)
        return _bare_copy(last, f"{message} after: {last.message}")

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
            cooling_until=_wall(self.cooling_until, now) if cooling else None,
            latency_avg=self.latency_total / attempts if attempts else None,
            resting_models={
                model: _wall(until, now) for model, until in self.resting.items() if until > now
            },
            budgets={
                model: budget.status(now, time.time()) for model, budget in self.budgets.items()
            },
        )


def _wall(until: float, now: float) -> datetime:
    return datetime.fromtimestamp(time.time() + until - now, UTC)


def _bare_copy(error: APIError, message: str | None = None) -> APIError:
    """The error's class and fields, without its traceback, body or headers."""
    copy = type(error)(
        error.message if message is None else message,
        status_code=error.status_code,
        type=error.type,
        code=error.code,
        param=error.param,
        label=error.label,
    )
    copy.rule = error.rule
    return copy


def _rank(
    key: AppKey,
    *,
    model: str | None,
    now: float,
    avoid: Sequence[AppKey],
    budget: Callable[[AppKey], Budget | None] | None,
    tokens: int,
) -> tuple[float, bool, int, int]:
    """How good a key is for the next attempt: lower is better."""
    free_at = max(key.free_at(model), now)
    state = budget(key) if budget is not None and free_at < math.inf else None
    if state is not None:
        free_at = max(free_at, state.free_at(now, tokens))
    return free_at, key in avoid, key.in_flight, key.assigned


def load_keys(
    app_key: object, app_keys: Sequence[str] | Mapping[str, str] | None
) -> list[tuple[str, str]]:
    """Validate the constructor's key arguments into ``(label, secret)`` pairs."""
    if app_key is not None and app_keys is not None:
        raise ConfigurationError("pass either app_key= or app_keys=, not both")
    if app_keys is not None:
        if isinstance(app_keys, str | bytes):
            raise ConfigurationError("app_keys= takes a list or a dict of keys; use app_key=")
        if isinstance(app_keys, Mapping):
            pairs = [(str(label), secret) for label, secret in app_keys.items()]
        elif isinstance(app_keys, Iterable):
            pairs = [(f"key-{index}", secret) for index, secret in enumerate(app_keys)]
        else:
            raise ConfigurationError(
                f"app_keys= takes a list or a dict of keys, not {type(app_keys).__name__}"
            )
        if not pairs:
            raise ConfigurationError("app_keys= is empty: give at least one AppKey")
    else:
        secret = app_key if app_key is not None else os.environ.get(_ENV_KEY)
        if secret is None:
            raise ConfigurationError(
                f"no AppKey: pass app_key=... or app_keys=[...], or set {_ENV_KEY}"
            )
        pairs = [("", secret)]  # type: ignore[list-item]  # checked just below
    checked = [(_check_secret(label, secret), label) for label, secret in pairs]
    labelled = [(label or redact(secret), secret) for secret, label in checked]
    labels = [label for label, _ in labelled]
    if len(set(labels)) != len(labels):
        raise ConfigurationError("key labels must be unique")
    return labelled


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
    """All keys of one client: the choice of a key per attempt, and their health."""

    def __init__(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        per_key_concurrency: int | None,
        policy: KeyPolicy,
    ) -> None:
        self.policy = policy
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
        except (KeyError, TypeError):
            known = ", ".join(self.labels[:_SHOWN_LABELS])
            more = ", …" if len(self.keys) > _SHOWN_LABELS else ""
            raise ConfigurationError(f"no key labelled {label!r} (known: {known}{more})") from None

    # -- choice --------------------------------------------------------------------

    def choose(
        self,
        model: str | None,
        pinned: AppKey | None = None,
        avoid: Sequence[AppKey] = (),
        *,
        probe: bool = False,
        budget: Callable[[AppKey], Budget | None] | None = None,
        tokens: int = 0,
    ) -> AppKey | Wait:
        """The key for the next attempt: of the keys free soonest, the least loaded.

        A key is free when it is healthy for ``model`` and, given ``budget`` (the
        key's budget for the model, if any), its budget takes a call of ``tokens``
        after the calls already waiting for it. Keys in ``avoid`` (those this call
        just failed on) come last among the keys free now. With more than 32 keys,
        two keys drawn at random are weighed first ("power of two choices": nearly
        as even, and O(1)); the full scan is the fallback. With no key free now, the
        answer is a ``Wait`` for the one free soonest.

        Raises:
            WishubError: no key can take the call at all: the pinned key's refusal,
                or ``KeyUnavailableError`` naming each key's state.
        """
        now = _clock.now()
        if pinned is not None and probe:
            return pinned
        if pinned is not None or len(self.keys) == 1:
            key = pinned or self.keys[0]
            if key.quarantined:
                raise key.refusal("quarantined (check_keys() probes it again)")
            return self._free_or_wait(key, model, now, budget, tokens)

        def rank(key: AppKey) -> tuple[float, bool, int, int]:
            return _rank(key, model=model, now=now, avoid=avoid, budget=budget, tokens=tokens)

        if len(self.keys) > _SCAN_LIMIT:
            drawn = (random.choice(self.keys), random.choice(self.keys))  # noqa: S311
            best = min(drawn, key=rank)
            if not best.quarantined and best not in avoid:
                return self._free_or_wait(best, model, now, budget, tokens)
        best = min(self.keys, key=rank)
        if best.quarantined:
            raise KeyUnavailableError(self.describe(self.keys, now))
        return self._free_or_wait(best, model, now, budget, tokens)

    @staticmethod
    def _free_or_wait(
        key: AppKey,
        model: str | None,
        now: float,
        budget: Callable[[AppKey], Budget | None] | None,
        tokens: int,
    ) -> AppKey | Wait:
        until = key.free_at(model)
        state = budget(key) if budget is not None else None
        if state is not None:
            budget_until = state.free_at(now, tokens)
            if budget_until > now and budget_until > until:
                return Wait(key, budget_until - now, budget_until, state)
        return key if until <= now else Wait(key, until - now, until)

    def end_wait(self, wait: Wait, model: str | None) -> None:
        """Someone waited ``wait`` out: make its key free now, unless it rested again."""
        key = wait.key
        if key.cooling_until == wait.until:
            key.cooling_until = 0.0
        if model is not None and key.resting.get(model) == wait.until:
            del key.resting[model]

    # -- health --------------------------------------------------------------------

    def succeeded(self, key: AppKey, latency: float, *, probe: bool) -> StateChange | None:
        """Count a success; a ``check_keys`` probe also lifts quarantine."""
        key.successes += 1
        key.latency_total += latency
        key.server_errors_in_row = 0
        # Only a probe lifts quarantine: a call that was already on its way when the
        # key was quarantined must not bring a revoked key back.
        if probe and (key.quarantined or key.cooling_until):
            before = key.state(_clock.now())
            key.quarantined = False
            key.cooling_until = 0.0
            return StateChange(key, before, KeyState.HEALTHY)
        return None

    def failed(
        self,
        key: AppKey,
        error: APIError | APIConnectionError,
        effect: KeyEffect,
        latency: float,
        *,
        model: str | None,
        transient: bool,
        cool_for: float,
    ) -> StateChange | None:
        """Count a failure and apply its effect on the key's health.

        Only transient failures (server errors, dropped connections, timeouts) count
        towards a brief cooling; a request the server rejected (400, 404) does not.
        """
        now = _clock.now()
        before = key.state(now)
        key.failures += 1
        key.latency_total += latency
        key.last_error_type = error_name(error)
        key.last_api_error = _bare_copy(error) if isinstance(error, APIError) else None
        policy = self.policy
        if effect is KeyEffect.QUARANTINE:
            key.quarantined = True
        elif effect is KeyEffect.COOL and model is not None:
            # Limits are per key and model: the key still serves other models.
            key.resting[model] = max(key.resting.get(model, 0.0), now + cool_for)
        elif effect is KeyEffect.COOL:
            key.cooling_until = max(key.cooling_until, now + cool_for)
        elif effect is KeyEffect.LONG_COOL or (effect is KeyEffect.BLOCK_MODEL and model is None):
            key.cooling_until = max(key.cooling_until, now + policy.quota_cooldown)
        elif effect is KeyEffect.BLOCK_MODEL:
            assert model is not None  # noqa: S101 - the branch above took model None
            key.resting[model] = max(key.resting.get(model, 0.0), now + policy.quota_cooldown)
        elif not transient:
            key.server_errors_in_row = 0
        else:
            key.server_errors_in_row += 1
            if key.server_errors_in_row >= max(policy.server_errors_before_cooling, 1):
                key.server_errors_in_row = 0
                key.cooling_until = max(key.cooling_until, now + policy.server_error_cooldown)
        after = key.state(now)
        return None if after is before else StateChange(key, before, after)

    # -- reports -------------------------------------------------------------------

    @staticmethod
    def describe(keys: Sequence[AppKey], now: float) -> str:
        """Why none of ``keys`` can be used, without naming any secret."""
        shown = [
            f"{key.label} {key.state(now)}"
            + (f" after {key.last_error_type}" if key.last_error_type else "")
            for key in keys[:_SHOWN_LABELS]
        ]
        more = f" and {len(keys) - _SHOWN_LABELS} more" if len(keys) > _SHOWN_LABELS else ""
        return f"no usable AppKey: {'; '.join(shown)}{more}"

    def status(self, keys: Sequence[AppKey] | None = None) -> list[KeyStatus]:
        """A snapshot per key (of ``keys``, or of every key), in the order given."""
        now = _clock.now()
        return [key.snapshot(now) for key in (self.keys if keys is None else keys)]
