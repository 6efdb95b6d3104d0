"""What a shared state keeps in this process: mirrors, queued updates, key hashes, health.

Nothing here talks to a server (``wishub_async.redis`` does): it is the bookkeeping
around the round trips of ``_shared_script``.

- ``SharedWindow`` and ``SharedRate`` are the local budgets a shared state puts in
  ``AppKey.budgets``: they count this process's own calls exactly as ``Window`` and
  ``AdaptiveRate`` do (the fallback when the server is out of reach), and remember
  what the last round trip said of the shared budget, so that key choice and
  ``key_status()`` see the shared view.
- ``Ops`` is the queue of updates that wait for the next round trip (calls ended,
  reservations given back, key health reported), each encoded as the script wants it.
- ``Health`` is a key's health as last pulled, in this process's clock.
- ``key_hash`` is what stands for a key in the store, and the ``checked_*``
  functions check ``RedisState``'s options.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ._budget import AdaptiveRate, Answer, Budget, BudgetStatus, RateLimit, Window
from ._keys import AppKey
from .exceptions import ConfigurationError

__all__ = [
    "MAX_QUEUED",
    "Finished",
    "Health",
    "Hold",
    "KeyList",
    "Names",
    "Ops",
    "Reservation",
    "Seen",
    "SharedRate",
    "SharedWindow",
    "checked_count",
    "checked_namespace",
    "checked_seconds",
    "checked_secret",
    "default_hash_secret",
    "encode",
    "key_hash",
    "mirror_of",
    "new_id",
]

MAX_QUEUED = 10_000
"""Updates kept while the server is out of reach; the oldest go first past that (a
dropped reservation lapses on the server by itself, after its lease)."""

_ANSWERS = {Answer.OK: "ok", Answer.RATE_LIMITED: "rl", Answer.OTHER: "other"}
_ids = itertools.count()
_process = os.urandom(6).hex()


def _new_process() -> None:
    global _process  # noqa: PLW0603 - a forked worker must not reuse its parent's ids
    _process = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_process)


def new_id() -> str:
    """A reservation id unique across processes (a random prefix and a counter)."""
    return f"{_process}{next(_ids):x}"


def default_hash_secret(namespace: str) -> bytes:
    """The HMAC secret used when none is given: derived from the namespace."""
    return hashlib.sha256(b"wishub-async shared state\0" + namespace.encode()).digest()


def checked_seconds(name: str, value: object) -> float:
    """``value``, if it is a finite number of seconds above 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be above 0, got {value!r}")
    return float(value)


def checked_count(name: str, value: object) -> int:
    """``value``, if it is a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, not {value!r}")
    return value


def checked_namespace(namespace: object) -> str:
    """``namespace``, if it can stand in a cluster hash tag (no braces, no spaces)."""
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError("namespace= must be a non-empty str")
    if any(char in namespace for char in "{}") or not namespace.isprintable() or " " in namespace:
        raise ConfigurationError(
            f"namespace= {namespace!r} must be printable, without spaces or braces"
        )
    return namespace


def checked_secret(hash_secret: str | bytes | None, namespace: str) -> bytes:
    """The HMAC secret: ``hash_secret`` as bytes, or derived from the namespace."""
    if hash_secret is None:
        return default_hash_secret(namespace)
    if isinstance(hash_secret, str):
        hash_secret = hash_secret.encode()
    if not isinstance(hash_secret, bytes) or not hash_secret:
        raise ConfigurationError("hash_secret= must be a non-empty str or bytes")
    return hash_secret


def key_hash(secret: bytes, key: AppKey) -> str:
    """The keyed hash that stands for ``key`` in the shared store (128 bits, hex)."""
    token = key.authorization.removeprefix("Bearer ").encode()
    return hmac.new(secret, token, hashlib.sha256).hexdigest()[:32]


@attrs.frozen
class Names:
    """The store's key names for one AppKey (its hash ``hk``) and model."""

    window: str
    tokens: str
    rate: str
    health: str

    @classmethod
    def of(cls, prefix: str, hk: str, model: str) -> Names:
        """Names under ``prefix`` (``wishub:{namespace}:``)."""
        return cls(
            f"{prefix}w:{hk}:{model}",
            f"{prefix}t:{hk}:{model}",
            f"{prefix}a:{hk}:{model}",
            f"{prefix}h:{hk}",
        )


@attrs.frozen
class Seen:
    """What the last round trip said of a shared window (in this process's clock)."""

    requests: int
    tokens: int
    at: float


@attrs.define(eq=False)
class SharedWindow(Window):
    """A ``Window`` counting this process's calls, that knows the shared one's state.

    ``hint`` is when the shared window next has room, as last seen: key choice
    (``free_at``) ranks the key by it. It is never later than the truth (a call in
    flight is taken to end now), so it never holds a call back for nothing; the
    reservation itself is checked on the server.
    """

    hint: float = 0.0
    seen: Seen | None = None

    def free_at(self, now: float, tokens: int = 0) -> float:
        """When a call fits here and, as last seen, in the shared window."""
        return max(super().free_at(now, tokens), self.hint)

    def status(self, now: float, wall: float) -> BudgetStatus:
        """This process's counts, or the shared window's as last seen if higher."""
        mine = super().status(now, wall)
        seen, limit = self.seen, self.limit
        if seen is None or now - seen.at >= limit.per:
            return mine
        requests = max(mine.requests_used, seen.requests)
        tokens = max(mine.tokens_used, seen.tokens)
        return attrs.evolve(
            mine,
            requests_used=requests,
            tokens_used=tokens,
            requests_free=None if limit.requests is None else max(limit.requests - requests, 0),
            tokens_free=None if limit.tokens is None else max(limit.tokens - tokens, 0),
        )


@attrs.define(eq=False)
class SharedRate(AdaptiveRate):
    """An ``AdaptiveRate`` whose rate follows the shared one; ``hint`` as above."""

    hint: float = 0.0

    def free_at(self, now: float, tokens: int = 0) -> float:
        """When the next call fits here and, as last seen, in the shared bucket."""
        return max(super().free_at(now, tokens), self.hint)


def mirror_of(key: AppKey, model: str, budget: Budget) -> SharedWindow | SharedRate:
    """``key``'s budget for ``model`` as a shared state's mirror (put in its place).

    The request path makes plain budgets; the first reservation replaces each with
    its shared kind, before any call has taken from it (calls waiting for it go on
    waiting; they count only towards the order of key choice).
    """
    if isinstance(budget, SharedWindow | SharedRate):
        return budget
    mirror: SharedWindow | SharedRate = (
        SharedWindow(budget.limit) if isinstance(budget, Window) else SharedRate()
    )
    key.budgets[model] = mirror
    return mirror


@attrs.frozen
class Hold:
    """An attempt's reservation in the shared store (``Slot.shared``)."""

    names: Names
    id: str
    member: str  # the in-flight member of a window ('' for an adaptive rate)
    reserved_at: str  # the server's time of the reservation (``%.6f``)


@attrs.frozen
class Reservation:
    """A call's share to take in the store: of a window (``limit``) or an adaptive rate."""

    names: Names
    id: str
    tokens: int
    model: str
    limit: RateLimit | None  # None: an adaptive rate
    lease: float

    @property
    def member(self) -> str:
        """Its member in the window while in flight ('' for an adaptive rate)."""
        return "" if self.limit is None else f"f{self.id}:{self.tokens}"

    def hold(self, reserved_at: str) -> Hold:
        """The attempt's handle on it, once taken (at the server's ``reserved_at``)."""
        return Hold(self.names, self.id, self.member, reserved_at)

    def encode(self, keys: KeyList) -> list[Any]:
        """As the script reads it."""
        names, limit = self.names, self.limit
        if limit is None:
            return ["A", keys.at(names.rate), keys.at(names.health), self.model]
        return [
            "r",
            keys.at(names.window),
            keys.at(names.tokens),
            keys.at(names.health),
            self.id,
            self.tokens,
            limit.requests or 0,
            limit.tokens or 0,
            limit.per,
            self.lease,
            self.model,
        ]


@attrs.frozen
class Finished:
    """A window's call that ended: its reserved and spent tokens, ``per``, and when."""

    reserved: int
    spent: int
    per: float
    at: float


@attrs.define
class _Op:
    """One queued update: its parts, with the store's key names still as names."""

    kind: str
    names: tuple[str, ...]
    fields: tuple[Any, ...]
    at: float  # this process's clock when it happened (sent as "seconds ago")
    health: str | None = None  # the key hash a health report is about


class Ops:
    """Updates waiting for the next round trip, oldest first, at most ``MAX_QUEUED``."""

    def __init__(self) -> None:
        self._queue: deque[_Op] = deque(maxlen=MAX_QUEUED)

    def __len__(self) -> int:
        return len(self._queue)

    def finished(self, names: Names, hold: Hold | None, call: Finished) -> None:
        """A window's call ended (``hold`` None: it was counted only here, so far)."""
        member, ident = ("", new_id()) if hold is None else (hold.member, hold.id)
        fields = (member, ident, call.reserved, call.spent, call.per)
        self._queue.append(_Op("f", (names.window, names.tokens), fields, call.at))

    def cancelled(self, hold: Hold, reserved: int, at: float) -> None:
        """A window's call was never sent: its reservation goes back."""
        names = hold.names
        self._queue.append(_Op("c", (names.window, names.tokens), (hold.member, reserved), at))

    def rate_finished(self, hold: Hold, answer: Answer, at: float) -> None:
        """An adaptive rate's call ended with ``answer``."""
        fields = (_ANSWERS[answer], hold.reserved_at)
        self._queue.append(_Op("F", (hold.names.rate,), fields, at))

    def rate_cancelled(self, hold: Hold, at: float) -> None:
        """An adaptive rate's call was never sent: its token goes back."""
        self._queue.append(_Op("C", (hold.names.rate,), (), at))

    def reported(self, health: str, hk: str, key: AppKey, model: str | None, at: float) -> None:
        """``key``'s health now (after a failure, or a probe's recovery)."""
        cooling = max(key.cooling_until - at, 0.0)
        resting = max(key.resting.get(model, 0.0) - at, 0.0) if model else 0.0
        # Only a check_keys probe's success reports a key with no model that is neither
        # quarantined nor cooling (it sets cooling_until to exactly 0.0): a recovery.
        recovered = model is None and not key.quarantined and key.cooling_until == 0.0
        fields = (
            int(key.quarantined),
            int(recovered),
            cooling,
            model or "",
            resting,
            key.last_error_type or "",
        )
        self._queue.append(_Op("h", (health,), fields, at, health=hk))

    def take(self, limit: int) -> list[_Op]:
        """Up to ``limit`` updates, oldest first, out of the queue."""
        queue = self._queue
        return [queue.popleft() for _ in range(min(limit, len(queue)))]

    def put_back(self, ops: list[_Op]) -> None:
        """Give back updates a failed round trip did not deliver.

        Adaptive ones are dropped: they are not idempotent, and a rate re-learns quickly.
        """
        for op in reversed(ops):
            if op.kind not in {"F", "C"} and len(self._queue) < MAX_QUEUED:
                self._queue.appendleft(op)

    def pending_health(self) -> Iterator[str]:
        """The key hashes with a health report still queued."""
        return (op.health for op in self._queue if op.health is not None)


class KeyList:
    """The script's KEYS, built up as operations name them (1-based, as Lua counts)."""

    def __init__(self, fixed: Iterable[str]) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        for name in fixed:
            self.at(name)

    def at(self, name: str) -> int:
        """``name``'s position (added if new)."""
        position = self._index.get(name)
        if position is None:
            self.names.append(name)
            position = self._index[name] = len(self.names)
        return position


def encode(ops: Iterable[_Op], keys: KeyList, now: float) -> list[list[Any]]:
    """The operations as the script reads them, key names as positions in ``keys``."""
    encoded = []
    for op in ops:
        positions = [keys.at(name) for name in op.names]
        if op.kind == "h":
            encoded.append(["h", positions[0], op.health, *op.fields, max(now - op.at, 0.0)])
        else:
            encoded.append([op.kind, *positions, *_with_ago(op, now)])
    return encoded


def _with_ago(op: _Op, now: float) -> tuple[Any, ...]:
    ago = max(now - op.at, 0.0)
    if op.kind == "f":  # member, id, reserved, spent, ago, per
        *head, per = op.fields
        return (*head, ago, per)
    if op.kind == "F":  # answer, reserved at, ago
        return (*op.fields, ago)
    return op.fields


@attrs.define
class Health:
    """A key's health as last pulled, in this process's clock."""

    quarantined: bool = False
    cooling_until: float = 0.0
    resting: dict[str, float] = attrs.Factory(dict)
    error: str | None = None
    recovery: int = 0  # the sequence number of its last recovery
    version: int = 0  # the state's pull count when it was stored

    @classmethod
    def parse(cls, fields: list[str], offset: float, version: int) -> Health:
        """From a health hash's ``HGETALL`` (flat name, value list; server times)."""
        health = cls(version=version)
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        health.quarantined = pairs.get("q") == "1"
        health.cooling_until = _local(pairs.get("c"), offset)
        health.error = pairs.get("e") or None
        health.recovery = int(pairs.get("rv", "0"))
        for name, value in pairs.items():
            if name.startswith("r:"):
                health.resting[name[2:]] = _local(value, offset)
        return health

    def apply(self, key: AppKey, now: float, *, recovered: bool) -> None:
        """Bring ``key`` up to date: quarantine spreads, rests only move later.

        ``recovered``: a probe elsewhere found the key working since it was last
        applied here, so its quarantine (and cooling) lifts here too.
        """
        if self.quarantined:
            key.quarantined = True
        elif recovered and key.quarantined:
            key.quarantined = False
            key.cooling_until = 0.0
        if key.last_error_type is None and self.error is not None:
            key.last_error_type = self.error
        if self.cooling_until > max(key.cooling_until, now):
            key.cooling_until = self.cooling_until
        for model, until in self.resting.items():
            if until > max(key.resting.get(model, 0.0), now):
                key.resting[model] = until


def _local(value: str | None, offset: float) -> float:
    """A server time (``None`` or ``"0"``: never) in this process's clock."""
    seconds = float(value) if value else 0.0
    return seconds - offset if seconds > 0 else 0.0
