"""Budgets and key health shared on Redis by every process of a fleet: ``RedisState``.

    from wishub_async.redis import RedisState       # extra: wishub-async[redis]

    state = RedisState.from_url("redis://127.0.0.1:6379/0", namespace="myapp")
    async with AsyncWishub(app_keys=keys, limits=limits, state=state) as wh:
        ...

Every process (or machine) with the same Redis and namespace shares the rate windows,
the adaptive rates and the key health of the same keys. A call takes its share of a
budget in one round trip (one Lua script, run atomically with the server's clock);
what ends later (calls settled, health reported) rides along with the next round trip
or a background flush a few milliseconds later. Keys appear in Redis only as a keyed
hash (HMAC-SHA256), and everything written has a TTL.

If Redis is out of reach or slow, calls go on with this process's own state (always
kept as a mirror), with one ``SharedStateWarning`` per outage; sharing resumes after a
short backoff. The client is redis-py's asyncio client, so this runs on asyncio only:
under trio the first call raises ``ConfigurationError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import warnings
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import anyio
import attrs

from . import _clock
from ._budget import Answer, Budget, Window
from ._shared_script import SCRIPT
from ._sharing import (
    Finished,
    Health,
    Hold,
    KeyList,
    Names,
    Ops,
    Reservation,
    Seen,
    SharedRate,
    SharedWindow,
    checked_count,
    checked_namespace,
    checked_seconds,
    checked_secret,
    encode,
    key_hash,
    mirror_of,
    new_id,
)
from ._state import LocalState
from .exceptions import ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import MaxConnectionsError, RedisError
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    message = "wishub_async.redis needs redis-py: pip install 'wishub-async[redis]'"
    raise ImportError(message) from exc

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ._keys import AppKey, KeyRing
    from ._slots import Slot

__all__ = ["RedisState", "SharedStateWarning", "SharingOptions"]

log = logging.getLogger("wishub_async")

_BATCH = 256
"""Queued updates one round trip carries at most."""
_SETTLE_DELAY = 0.02
"""A call's end waits this long for a round trip to ride along with, then is flushed."""
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 2.0
"""After a failed round trip, Redis is left alone for 0.5 s, doubling up to 2 s."""
_RATE_TTL = 3600.0
"""An adaptive rate nobody used for an hour starts again from a slow start."""


class SharedStateWarning(RuntimeWarning):
    """The shared state is out of reach: calls go on with this process's own state.

    Issued once per outage (and logged); sharing resumes by itself when Redis answers
    again, which is logged too.
    """


class SharingOptions(TypedDict, total=False):
    """``RedisState``'s options that ``from_url`` passes on (see the class)."""

    hash_secret: str | bytes | None
    lease: float
    health_ttl: float
    refresh_interval: float


@attrs.frozen
class _Answer:
    """What one round trip brought back."""

    reserve: dict[str, Any] | None
    now: str  # the server's time, "%.6f"
    mid: float  # this process's clock halfway through the round trip


@attrs.define
class _Ring:
    """A client's keys, by their hash, and how much of the pulled health they saw."""

    keys: dict[str, list[AppKey]]
    applied: int = 0


class RedisState:
    """Rate budgets and key health shared through Redis (pass it as ``state=``).

    Build it with ``RedisState.from_url(url, namespace=...)``, or around your own
    redis-py asyncio client. One state may serve several clients; the client's
    ``aclose()`` closes its connections, and it reconnects when used again.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``RedisCluster``: everything of one
            namespace lives in one hash slot).
        namespace: what the processes sharing budgets have in common; different
            namespaces on one Redis share nothing.
        hash_secret: the HMAC secret keys are hashed with in Redis (the same on every
            process of the namespace); default: derived from the namespace. Keys are
            long random strings, so even the default hash cannot be reversed; a
            secret of your own also keeps anyone holding a list of keys from telling
            which of them appear in Redis.
        timeout: seconds one round trip may take, waiting for a connection included;
            past it Redis counts as out of reach.
        max_connections: round trips in flight at once (and, with ``from_url``, the
            connection pool's size); more calls wait for one, at most ``timeout``,
            then go on without sharing (this is not taken for an outage).
        lease: seconds a call in flight stays counted if its process never reports
            its end (it died): then it lapses ``per`` seconds later.
        health_ttl: seconds a key's shared health (a quarantine, say) is kept after
            its last change.
        refresh_interval: how often (seconds) each process pulls the key health the
            others reported, when it makes calls; a quarantine spreads within about
            that, plus a round trip.
        close_client: whether ``aclose()`` closes ``client`` (``from_url``: yes).

    Raises:
        ConfigurationError: an option is malformed.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        namespace: str,
        hash_secret: str | bytes | None = None,
        timeout: float = 0.25,
        max_connections: int = 16,
        lease: float = 300.0,
        health_ttl: float = 86_400.0,
        refresh_interval: float = 0.5,
        close_client: bool = False,
    ) -> None:
        self.namespace = checked_namespace(namespace)
        self.timeout = checked_seconds("timeout", timeout)
        self.max_connections = checked_count("max_connections", max_connections)
        self.lease = checked_seconds("lease", lease)
        self.health_ttl = checked_seconds("health_ttl", health_ttl)
        self.refresh_interval = checked_seconds("refresh_interval", refresh_interval)
        self._client = client
        self._close_client = close_client
        self._secret = checked_secret(hash_secret, self.namespace)
        self._script: AsyncScript = client.register_script(SCRIPT)
        self._prefix = f"wishub:{{{self.namespace}}}:"
        self._fixed = (self._prefix + "hs", self._prefix + "hc")
        self._fallback = LocalState()
        self._ops = Ops()
        self._hashes: weakref.WeakKeyDictionary[AppKey, str] = weakref.WeakKeyDictionary()
        self._names: dict[tuple[str, str], Names] = {}
        self._rings: weakref.WeakKeyDictionary[KeyRing, _Ring] = weakref.WeakKeyDictionary()
        self._recoveries: weakref.WeakKeyDictionary[AppKey, int] = weakref.WeakKeyDictionary()
        self._health: dict[str, Health] = {}
        self._version = 0  # pulls that brought health changes
        self._since = 0  # the last health change seen (the store's sequence number)
        self._epoch = ""  # the store's epoch (it changes when the store lost its data)
        self._offset = 0.0  # the server's clock minus ours
        self._next_pull = -math.inf
        self._pulls = 0  # round trips in flight (each pulls health)
        self._down_until = -math.inf  # no round trip before then (a backoff)
        self._backoff = _FIRST_BACKOFF
        self._outage = False
        self._probing = False
        self._warning: str | None = None  # to issue at the next call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter = anyio.CapacityLimiter(max_connections)
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        timeout: float = 0.25,
        max_connections: int = 16,
        redis_options: Mapping[str, Any] | None = None,
        **options: Unpack[SharingOptions],
    ) -> RedisState:
        """A state on the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

        The client is redis-py's ``redis.asyncio.Redis``, with socket timeouts of
        ``timeout``, a pool of ``max_connections`` and its own retries off (a failed
        round trip falls back at once); ``redis_options`` go to its ``from_url`` too
        (TLS files, a password not in the URL...). The other arguments are the
        class's; ``aclose()`` closes the client.
        """
        seconds = checked_seconds("timeout", timeout)
        client = aioredis.Redis.from_url(
            url,
            **{
                "socket_timeout": seconds,
                "socket_connect_timeout": seconds,
                "max_connections": checked_count("max_connections", max_connections),
                "retry": Retry(NoBackoff(), 0),
                **(redis_options or {}),
            },
        )
        return cls(
            client,
            namespace=namespace,
            timeout=seconds,
            max_connections=max_connections,
            close_client=True,
            **options,
        )

    def __repr__(self) -> str:
        reach = "out of reach" if self._outage else "sharing"
        return f"<RedisState namespace={self.namespace!r} {reach}>"

    @property
    def sharing(self) -> bool:
        """False from a failed round trip until one succeeds again."""
        return not self._outage

    # -- the State protocol ------------------------------------------------------------

    async def reserve(self, slot: Slot, model: str, budget: Budget, tokens: int) -> float:
        """Take an attempt's share of the shared budget, in one round trip.

        Returns 0, with the share held by ``slot`` or, when the shared budget (or the
        key's shared health) says no, not: the mirror now knows when it frees, so the
        call chooses a key again at once. Without Redis, the local budget decides.
        """
        self._enter()
        key = slot.key
        mirror = mirror_of(key, model, budget)
        now = _clock.now()
        if isinstance(mirror, SharedWindow) and not mirror.fits(now, tokens):
            return max(mirror.free_at(now, tokens) - now, 0.0)  # full with our own calls
        reservation = Reservation(
            self._names_of(key, model),
            new_id(),
            tokens,
            model,
            mirror.limit if isinstance(mirror, SharedWindow) else None,
            self.lease,
        )
        answer = await self._round_trip(reservation)
        self._issue_warning()
        if answer is None or answer.reserve is None:
            return await self._fallback.reserve(slot, model, mirror, tokens)
        return self._reserved(slot, model, mirror, reservation, answer)

    def settle(self, slot: Slot, answer: Answer | None, spent: int | None) -> None:
        """Count the end in the mirror now, and queue it for Redis (no round trip)."""
        self._fallback.settle(slot, answer, spent)
        budget, hold, now = slot.budget, slot.shared, _clock.now()
        if isinstance(budget, Window):
            if answer is not None:  # calls counted only here are recorded late
                used = slot.tokens if spent is None else spent
                names = self._names_of(slot.key, slot.model)
                held = hold if isinstance(hold, Hold) else None
                self._ops.finished(names, held, Finished(slot.tokens, used, budget.limit.per, now))
            elif isinstance(hold, Hold):
                self._ops.cancelled(hold, slot.tokens, now)
            else:
                return
        elif isinstance(hold, Hold):
            if answer is None:
                self._ops.rate_cancelled(hold, now)
            else:
                self._ops.rate_finished(hold, answer, now)
        else:
            return
        self._schedule(_SETTLE_DELAY)

    def report(self, key: AppKey, model: str | None) -> None:
        """Queue ``key``'s new health for Redis, to go out at once (in the background)."""
        hk = self._hash(key)
        self._ops.reported(self._prefix + "h:" + hk, hk, key, model, _clock.now())
        self._schedule(0.0)

    async def refresh(self, ring: KeyRing) -> None:
        """Bring the keys' health up to date with Redis, at most every ``refresh_interval``."""
        self._enter()
        view = self._ring(ring)
        if _clock.now() >= self._next_pull and not self._pulls:
            await self._round_trip(None)
            self._issue_warning()
        if view.applied < self._version:
            self._apply(view)

    async def aclose(self) -> None:
        """Send what is queued (briefly), stop the background flush, close connections.

        The state stays usable: a later call reconnects.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # under trio nothing was ever opened
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done() and loop is self._loop:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        if self._ops and loop is self._loop:
            await self._round_trip(None)
        if self._close_client:
            # Connections another client's call is using now stay open (that client
            # closes them): only what is idle is closed, unless nothing of ours runs.
            pool = getattr(self._client, "connection_pool", None)  # a cluster has several
            if pool is None:
                await self._client.aclose()
            else:
                await pool.disconnect(inuse_connections=not self._pulls)

    # -- reservations -------------------------------------------------------------------

    def _reserved(
        self,
        slot: Slot,
        model: str,
        mirror: SharedWindow | SharedRate,
        reservation: Reservation,
        answer: _Answer,
    ) -> float:
        """The reservation's answer, applied to the mirror, the key and the slot."""
        reply = answer.reserve
        assert reply is not None  # noqa: S101 - the caller checked
        status, mid = reply["s"], answer.mid
        if status in {"ok", "w"}:
            free = float(reply.get("f", 0.0))
            mirror.hint = mid + free if free > 0 else 0.0
            if isinstance(mirror, SharedWindow):
                mirror.seen = Seen(int(reply["n"]), int(reply["k"]), mid)
            else:
                mirror.rate = float(reply["rate"])
        if status == "ok":
            now, tokens = _clock.now(), reservation.tokens
            mirror.take(now, tokens)
            slot.hold(model, mirror, tokens, now, reservation.hold(answer.now))
            return 0.0
        if status != "w":  # the key is quarantined, cooling or resting from the model
            key = slot.key
            error = reply.get("e") or None
            if key.last_error_type is None and error is not None:
                key.last_error_type = error
            until = mid + float(reply.get("f", 0.0))
            if status == "q":
                key.quarantined = True
            elif status == "c":
                key.cooling_until = max(key.cooling_until, until)
            else:
                key.resting[model] = max(key.resting.get(model, 0.0), until)
        return 0.0

    # -- round trips ----------------------------------------------------------------------

    async def _round_trip(self, reservation: Reservation | None) -> _Answer | None:
        """One script run: queued updates, a reservation, a pull. None: not shared now.

        None when Redis is out of reach (then a backoff) or every connection is busy
        for ``timeout`` (that is only this call's bad luck). Never raises a Redis
        error: a failure becomes the outage's one warning.
        """
        if _clock.now() < self._down_until or (self._outage and self._probing):
            return None
        limiter = self._limiter
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(self.timeout) as waited:
                await limiter.acquire()
            if waited.cancelled_caught:
                return None
        ops = self._ops.take(_BATCH)
        sent = delivered = False
        self._pulls += 1
        probe = self._probing = self._outage  # while out of reach, one call probes at a time
        try:
            started = _clock.now()
            sent = True
            raw = await self._run(ops, reservation, started)
            ended = _clock.now()
            result = json.loads(raw)
            delivered = True
        except MaxConnectionsError:
            return None  # a pool shared with others is full: not an outage
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._out_of_reach(exc)
            await self._drop_idle_connections()
            return None
        finally:
            limiter.release()
            self._pulls -= 1
            if probe:
                self._probing = False
            if not delivered:
                self._ops.put_back(ops)
            if sent and not delivered and reservation is not None and reservation.member:
                # The script may have taken it before the answer was lost: give it back
                # (harmless if it never was), or it would count until its lease ran out.
                self._ops.cancelled(reservation.hold(""), reservation.tokens, _clock.now())
                self._schedule(_SETTLE_DELAY)
        mid = (started + ended) / 2
        self._offset = float(result["now"]) - mid
        self._back_in_reach()
        self._pulled(result.get("p"))
        return _Answer(result.get("r") or None, result["now"], mid)

    async def _run(self, ops: list[Any], reservation: Reservation | None, now: float) -> Any:
        """Send the script its KEYS and its request; bounded by ``timeout``."""
        keys = KeyList(self._fixed)
        request: dict[str, Any] = {
            "o": encode(ops, keys, now),
            "p": [self._since, self._epoch],
            "ht": self.health_ttl,
            "at": _RATE_TTL,
            "hp": self._prefix + "h:",
        }
        if reservation is not None:
            request["r"] = reservation.encode(keys)
        async with asyncio.timeout(self.timeout):  # cheaper than a cancel scope, here
            return await self._script(keys=keys.names, args=[json.dumps(request)])

    async def _drop_idle_connections(self) -> None:
        """Close the pool's idle connections, which a failure may have left dead.

        After a restarted server, each would otherwise fail once more when next used.
        """
        pool = getattr(self._client, "connection_pool", None)  # a cluster has several
        if pool is not None:
            with anyio.move_on_after(self.timeout), contextlib.suppress(RedisError, OSError):
                await pool.disconnect(inuse_connections=False)

    def _out_of_reach(self, exc: BaseException) -> None:
        """A round trip failed: leave Redis alone for a while; warn once per outage."""
        self._down_until = _clock.now() + self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        if self._outage:
            return
        self._outage = True
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._warning = (
            f"shared state (Redis, namespace {self.namespace!r}) is out of reach ({why});"
            " calls go on with this process's own budgets and key health until it answers"
        )
        log.warning("%s", self._warning)

    def _back_in_reach(self) -> None:
        self._backoff = _FIRST_BACKOFF
        if self._outage:
            self._outage = False
            self._warning = None
            log.warning(
                "shared state (Redis, namespace %r) answers again: sharing resumed", self.namespace
            )

    def _pulled(self, pulled: dict[str, Any] | None) -> None:
        """Take in the key health that changed since the last pull."""
        if not pulled:
            return
        epoch = pulled["e"]
        if epoch != self._epoch:
            lost = bool(self._epoch)  # the store lost what it had (a restart, a flush)
            self._epoch = epoch
            if lost:
                self._republish()
        self._since = int(pulled["s"])
        rows = pulled.get("h") or []
        if rows:
            self._version += 1
            for hk, fields in rows:
                self._health[hk] = Health.parse(fields or [], self._offset, self._version)
        self._next_pull = _clock.now() + self.refresh_interval

    def _republish(self) -> None:
        """Report again every key this process knows to be unwell (the store forgot)."""
        now = _clock.now()
        for ring in list(self._rings.values()):
            for keys in ring.keys.values():
                for key in keys:
                    if key.quarantined or key.cooling_until > now:
                        self.report(key, None)
                    for model, until in key.resting.items():
                        if until > now:
                            self.report(key, model)

    # -- the background flush ---------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        """Make sure the queued updates go out within ``delay`` (or with a reservation)."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to flush from: the next call's round trip takes them
        self._bind(loop)
        self._flusher = loop.create_task(self._flush(delay))

    async def _flush(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while self._ops:
            wait = self._down_until - _clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
            elif await self._round_trip(None) is None:
                # Out of reach, being probed, or every connection busy: look again soon
                # (the sleep also lets the loop run when the round trip did not).
                await asyncio.sleep(_SETTLE_DELAY)

    # -- keys and health --------------------------------------------------------------------

    def _enter(self) -> None:
        """Check the event loop (asyncio only), and issue a pending outage warning."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "RedisState runs on asyncio only (redis-py's client is asyncio's);"
                " under trio, use the default state"
            ) from None
        self._bind(loop)
        self._issue_warning()

    def _issue_warning(self) -> None:
        """Issue the outage's warning, in the call that met it (or the next one)."""
        if self._warning is not None:
            text, self._warning = self._warning, None
            warnings.warn(text, SharedStateWarning, stacklevel=4)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use ``loop`` from now on: what belonged to another loop is left behind."""
        if loop is not self._loop:
            self._loop = loop
            self._limiter = anyio.CapacityLimiter(self.max_connections)
            self._flusher = None

    def _hash(self, key: AppKey) -> str:
        hk = self._hashes.get(key)
        if hk is None:
            hk = self._hashes[key] = key_hash(self._secret, key)
        return hk

    def _names_of(self, key: AppKey, model: str) -> Names:
        hk = self._hash(key)
        names = self._names.get((hk, model))
        if names is None:
            names = self._names[hk, model] = Names.of(self._prefix, hk, model)
        return names

    def _ring(self, ring: KeyRing) -> _Ring:
        view = self._rings.get(ring)
        if view is None:
            keys: dict[str, list[AppKey]] = {}
            for key in ring.keys:
                keys.setdefault(self._hash(key), []).append(key)
            view = self._rings[ring] = _Ring(keys)
        return view

    def _apply(self, view: _Ring) -> None:
        """Apply the health pulled since ``view`` last looked to its keys."""
        now = _clock.now()
        pending = set(self._ops.pending_health())
        for hk, health in self._health.items():
            if health.version <= view.applied:
                continue
            for key in view.keys.get(hk, ()):
                seen = self._recoveries.get(key, 0)
                self._recoveries[key] = max(seen, health.recovery)
                health.apply(key, now, recovered=health.recovery > seen and hk not in pending)
        view.applied = self._version
