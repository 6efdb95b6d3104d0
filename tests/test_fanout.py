"""Many AppKeys: fan_out, map, limits, health, cancellation."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from conftest import K1, K2, WRONG, assert_nothing_held

from wishub_async import AsyncWishub, KeyPolicy, KeyState, RetryPolicy
from wishub_async.exceptions import (
    AuthenticationError,
    ConfigurationError,
    KeyUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from wishub_async.models import ModelList
from wishub_async.testing import FakeWishub


def keys(count: int) -> list[str]:
    return [secrets.token_hex(16) for _ in range(count)]


async def list_models(wh: AsyncWishub) -> ModelList:
    return await wh.models.list()


async def list_for_item(wh: AsyncWishub, _: object) -> int:
    return len(await wh.models.list())


@pytest.mark.anyio
async def test_fifty_keys_five_wrong_five_rate_limited() -> None:
    good = keys(45)
    wrong = keys(5)
    fake = FakeWishub(good)
    for key in good[:5]:
        fake.fail(key, type="rate_limit_exceeded", retry_after="1", times=1)
    async with fake.client(app_keys=good + wrong) as wh:
        outcomes = await wh.fan_out(list_models)
        assert len(outcomes) == 50
        assert sum(outcome.ok for outcome in outcomes) == 45
        assert [outcome.label for outcome in outcomes] == [f"key-{n}" for n in range(50)]
        assert all(isinstance(o.error, AuthenticationError) for o in outcomes.failed)
        assert {o.label for o in outcomes.failed} == {f"key-{n}" for n in range(45, 50)}
        assert [outcomes[n].attempts for n in range(6)] == [2, 2, 2, 2, 2, 1]
        states = {status.label: status.state for status in wh.key_status()}
    for key in wrong:
        assert fake.count(key) == 1
    assert all(states[f"key-{n}"] is KeyState.QUARANTINED for n in range(45, 50))
    assert all(states[f"key-{n}"] is KeyState.HEALTHY for n in range(45))
    with pytest.raises(ExceptionGroup) as group:
        outcomes.raise_for_errors()
    assert len(group.value.exceptions) == 5
    assert "5 of 50 calls failed" in str(group.value)


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_limits_are_never_exceeded_at_the_server() -> None:
    some = keys(5)
    fake = FakeWishub(some, latency=0.005)
    async with fake.client(app_keys=some, max_concurrency=6, per_key_concurrency=2) as wh:
        outcomes = await wh.map(list_for_item, range(120))
    assert all(outcome.ok for outcome in outcomes)
    assert fake.peak_in_flight_total <= 6
    assert max(fake.peak_in_flight[key] for key in some) <= 2
    assert fake.peak_in_flight_total == 6  # the limit was reached, not just respected


@pytest.mark.anyio
async def test_map_spreads_a_thousand_items_fairly_over_twenty_keys() -> None:
    twenty = keys(20)
    fake = FakeWishub(twenty)
    async with fake.client(app_keys=twenty) as wh:
        outcomes = await wh.map(list_for_item, range(1000))
    assert [outcome.index for outcome in outcomes] == list(range(1000))
    assert all(outcome.value == 3 for outcome in outcomes)
    per_key = Counter(request.key for request in fake.requests)
    assert sum(per_key.values()) == 1000
    assert max(per_key.values()) <= 2 * 1000 / 20


@pytest.mark.anyio
async def test_map_keeps_input_order_and_reports_each_item() -> None:
    fake = FakeWishub([K1, K2])

    async def echo(wh: AsyncWishub, item: str) -> str:
        await wh.models.list()
        await anyio.sleep(0.001 * (ord(item) % 5))
        return item.upper()

    async with fake.client(app_keys=[K1, K2]) as wh:
        outcomes = await wh.map(echo, "abcdefgh")
    assert [outcome.value for outcome in outcomes] == list("ABCDEFGH")
    assert outcomes.values == list("ABCDEFGH")
    assert {outcome.label for outcome in outcomes} == {"key-0", "key-1"}
    assert all(outcome.attempts == 1 and outcome.elapsed >= 0 for outcome in outcomes)


@pytest.mark.anyio
async def test_a_wrong_key_in_map_moves_items_to_other_keys() -> None:
    fake = FakeWishub([K1, K2])
    async with fake.client(app_keys={"bad": WRONG, "a": K1, "b": K2}) as wh:
        outcomes = await wh.map(list_for_item, range(30))
        assert all(outcome.ok for outcome in outcomes)
        assert {status.label: status.state for status in wh.key_status()}["bad"] is (
            KeyState.QUARANTINED
        )
    assert 1 <= fake.count(WRONG) <= 3  # only the calls in flight before the first answer
    moved = [outcome for outcome in outcomes if outcome.attempts == 2]
    assert moved
    assert all(outcome.label in {"a", "b"} for outcome in outcomes)


@pytest.mark.anyio
async def test_a_rate_limit_in_map_moves_instead_of_waiting(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    fake = FakeWishub([K1, K2])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="30", times=1)
    async with fake.client(app_keys=[K1, K2], retry=RetryPolicy(deadline=5)) as wh:
        outcome = (await wh.map(list_for_item, ["only"]))[0]
    assert outcome.ok
    assert outcome.label == "key-1"
    assert outcome.attempts == 2
    assert "moving to another key" in debug_log.text
    assert "retrying in" not in debug_log.text


@pytest.mark.anyio
async def test_when_every_key_is_wrong_each_item_says_why() -> None:
    fake = FakeWishub([K1])
    bad = keys(3)
    async with fake.client(app_keys=bad) as wh:
        outcomes = await wh.map(list_for_item, range(10))
        assert not any(outcome.ok for outcome in outcomes)
        for outcome in outcomes:
            assert isinstance(outcome.error, AuthenticationError | KeyUnavailableError)
        late = await wh.map(list_for_item, range(2))
    for outcome in late:
        assert isinstance(outcome.error, KeyUnavailableError)
        assert "no usable AppKey" in str(outcome.error)
        assert "quarantined after INCORRECT_API_KEY_PROVIDED" in str(outcome.error)
    assert sum(fake.count(key) for key in bad) <= 10


@pytest.mark.anyio
async def test_a_long_cooling_fails_fast_with_the_keys_last_error() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="insufficient_quota", times=1)
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(QuotaExceededError):
            await wh.models.list()
        status = wh.key_status()[0]
        assert status.state is KeyState.COOLING
        assert status.cooling_until is not None
        assert status.cooling_until > datetime.now(UTC) + timedelta(seconds=250)
        with pytest.raises(QuotaExceededError, match=r"not sent: key …\w+ is cooling for another"):
            await wh.models.list()  # no silent 300 s sleep, and nothing sent
    assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_a_short_cooling_past_the_deadline_fails_fast() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="20", times=1)
    async with fake.client(app_key=K1, retry=RetryPolicy(attempts=1, deadline=5)) as wh:
        with pytest.raises(RateLimitError):
            await wh.models.list()
        with pytest.raises(RateLimitError, match="past the call's deadline"):
            await wh.models.list()
    assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_a_wrong_single_key_keeps_raising_authentication_errors() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_key=WRONG) as wh:
        with pytest.raises(AuthenticationError) as first:
            await wh.models.list()
        with pytest.raises(
            AuthenticationError, match="not sent: key …dead is quarantined"
        ) as again:
            await wh.models.list()
        assert wh.key_status()[0].state is KeyState.QUARANTINED
    assert (again.value.status_code, again.value.type, again.value.code) == (
        first.value.status_code,
        first.value.type,
        first.value.code,
    )
    assert again.value.__traceback__ is not first.value.__traceback__
    assert fake.count(WRONG) == 1


@pytest.mark.anyio
async def test_a_cooling_key_is_waited_for_without_a_deadline() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="rate_limit_exceeded", retry_after="2", times=1)
    async with fake.client(app_key=K1, retry=RetryPolicy(attempts=1)) as wh:
        with pytest.raises(RateLimitError):
            await wh.models.list()
        assert wh.key_status()[0].state is KeyState.COOLING
        assert len(await wh.models.list()) == 3  # waited out the cooling (instantly here)


@pytest.mark.anyio
async def test_repeated_server_errors_cool_a_key_briefly() -> None:
    fake = FakeWishub([K1, K2])
    fake.fail(K1, times=3)
    async with fake.client(app_keys=[K1, K2], retry=RetryPolicy(attempts=1)) as wh:
        pinned = wh.with_key("key-0")
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017, PT011 - the cooling is the point
                await pinned.models.list()
        status = wh.key_status()[0]
        assert status.state is KeyState.COOLING
        assert status.last_error_type == "INVOKE_MODEL_ERROR"
        assert status.failures == 3
        outcome = (await wh.map(list_for_item, [1]))[0]
        assert outcome.label == "key-1"  # the cooling key is skipped


@pytest.mark.anyio
async def test_fan_out_over_chosen_keys_and_unknown_labels() -> None:
    fake = FakeWishub([K1, K2])
    async with fake.client(app_keys={"a": K1, "b": K2}) as wh:
        outcomes = await wh.fan_out(list_models, keys=["b"])
        assert [outcome.label for outcome in outcomes] == ["b"]
        with pytest.raises(ConfigurationError, match="'zz'"):
            await wh.fan_out(list_models, keys=["a", "zz"])
    assert fake.count(K2) == 1
    assert fake.count(K1) == 0  # nothing was sent for the bad call


@pytest.mark.anyio
async def test_map_as_completed_yields_every_outcome() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_key=K1) as wh, wh.map_as_completed(list_for_item, range(25)) as out:
        seen = [outcome async for outcome in out]
    assert sorted(outcome.index for outcome in seen) == list(range(25))
    assert all(outcome.value == 3 for outcome in seen)


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_leaving_map_as_completed_early_cancels_the_rest() -> None:
    fake = FakeWishub([K1], latency=0.05)
    async with fake.client(app_key=K1, max_concurrency=4) as wh:
        async with wh.map_as_completed(list_for_item, range(1000)) as outcomes:
            async for _ in outcomes:
                break
        assert fake.count() < 20
        assert len(await wh.models.list()) == 3


@pytest.mark.anyio
async def test_check_keys_probes_every_key_and_lifts_quarantine() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_keys={"a": K1, "b": K2}) as wh:
        await wh.fan_out(list_models)
        assert [s.state for s in wh.key_status()] == [KeyState.HEALTHY, KeyState.QUARANTINED]
        fake.add_key(K2)  # the service group was fixed in the console
        probes = await wh.check_keys()
        assert all(probe.ok for probe in probes)
        assert [s.state for s in wh.key_status()] == [KeyState.HEALTHY, KeyState.HEALTHY]


@pytest.mark.anyio
async def test_key_status_is_a_secret_free_snapshot() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_keys={"a": K1, "b": WRONG}) as wh:
        await wh.fan_out(list_models)
        a, b = wh.key_status()
    assert (a.label, a.redacted, a.state, a.successes, a.failures, a.in_flight) == (
        "a",
        "…" + K1[-4:],
        KeyState.HEALTHY,
        1,
        0,
        0,
    )
    assert a.latency_avg is not None
    assert a.last_error_type is None
    assert (b.state, b.failures, b.last_error_type) == (
        KeyState.QUARANTINED,
        1,
        "INCORRECT_API_KEY_PROVIDED",
    )
    assert K1 not in repr(a) + repr(b)
    assert WRONG not in repr(a) + repr(b)


def test_labels_are_unique_even_when_tails_collide() -> None:
    many = [secrets.token_hex(16) for _ in range(1000)]
    wh = AsyncWishub(app_keys=many)
    labels = wh.key_labels
    assert len(set(labels)) == 1000
    assert labels[7] == "key-7"
    assert all(secret not in repr(wh) for secret in many[:10])


@pytest.mark.anyio
async def test_cancelling_a_fan_out_stops_it_and_leaks_no_connection() -> None:
    some = keys(8)
    fake = FakeWishub(some)
    async with fake.serve() as base_url, AsyncWishub(app_keys=some, base_url=base_url) as wh:
        await wh.fan_out(list_models)  # warm the pool
        fake.latency = 30
        with anyio.move_on_after(0.3) as scope:
            await wh.fan_out(list_models)
        assert scope.cancelled_caught
        assert_nothing_held(wh)
        assert all(status.in_flight == 0 for status in wh.key_status())
        fake.latency = 0
        again = await wh.fan_out(list_models)
        assert all(outcome.ok for outcome in again)


@pytest.mark.anyio
async def test_a_caller_client_with_a_small_pool_still_works() -> None:
    some = keys(10)
    fake = FakeWishub(some)
    small = httpx.AsyncClient(transport=fake, limits=httpx.Limits(max_connections=2))
    async with AsyncWishub(
        app_keys=some, base_url="https://wishub.fake/v1", http_client=small
    ) as wh:
        outcomes = await wh.map(list_for_item, range(50))
    assert all(outcome.ok for outcome in outcomes)
    await small.aclose()


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_waiting_happens_in_our_queue_not_in_the_httpx_pool() -> None:
    some = keys(4)
    fake = FakeWishub(some, latency=0.02)
    tight_pool = httpx.Timeout(10.0, pool=0.001)  # httpx would give up at once
    async with (
        fake.serve() as base_url,
        AsyncWishub(app_keys=some, base_url=base_url, max_concurrency=8, timeout=tight_pool) as wh,
    ):
        outcomes = await wh.map(list_for_item, range(80))
    assert all(outcome.ok for outcome in outcomes), outcomes.failed[:1]
    assert fake.peak_in_flight_total == 8


@pytest.mark.anyio
async def test_requests_the_server_rejects_do_not_cool_a_key() -> None:
    fake = FakeWishub([K1])
    fake.fail(K1, type="invalid_request_error", times=5)
    async with fake.client(app_key=K1) as wh:
        for _ in range(5):
            with pytest.raises(Exception):  # noqa: B017, PT011 - the key state is the point
                await wh.models.list()
        status = wh.key_status()[0]
    assert (status.state, status.failures) == (KeyState.HEALTHY, 5)


@pytest.mark.anyio
async def test_with_many_keys_the_choice_stays_even_and_skips_bad_keys() -> None:
    hundred = keys(100)
    wrong = keys(20)
    fake = FakeWishub(hundred)
    async with fake.client(app_keys=hundred + wrong) as wh:
        outcomes = await wh.map(list_for_item, range(3000))
        states = Counter(status.state for status in wh.key_status())
    assert all(outcome.ok for outcome in outcomes)
    per_key = Counter(request.key for request in fake.requests if request.key in hundred)
    assert sum(per_key.values()) == 3000
    assert max(per_key.values()) <= 2 * 3000 / 100
    assert states[KeyState.QUARANTINED] == 20
    # Calls already on their way to a wrong key when it was found out may also meet it.
    assert all(fake.count(key) >= 1 for key in wrong)
    assert sum(fake.count(key) for key in wrong) <= 2 * len(wrong)


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_calls_queued_for_a_busy_key_do_not_block_other_keys() -> None:
    fake = FakeWishub([K1, K2], latency=0.05)
    async with (
        fake.client(app_keys={"a": K1, "b": K2}, max_concurrency=2, per_key_concurrency=1) as wh,
        anyio.create_task_group() as group,
    ):
        for _ in range(6):
            group.start_soon(list_models, wh.with_key("a"))
        await anyio.sleep(0.01)  # the six are queued on key a by now
        group.start_soon(list_models, wh.with_key("b"))
    order = [request.key for request in fake.requests]
    assert order.index(K2) <= 1  # b was served alongside a's first call, not after all six


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_wait_for_cooling_does_not_end_a_newer_cooling() -> None:
    fake = FakeWishub([K1])
    async with fake.client(app_key=K1, retry=RetryPolicy(max_retry_after=10)) as wh:
        key = wh._shared.ring.keys[0]
        key.cooling_until = time.monotonic() + 0.3  # a short cooling, waited out

        async def cool_again_meanwhile() -> None:
            await anyio.sleep(0.05)
            key.cooling_until = time.monotonic() + 50  # say, a Retry-After on another call

        async with anyio.create_task_group() as group:
            group.start_soon(cool_again_meanwhile)
            with pytest.raises(KeyUnavailableError, match="cooling for another"):
                await wh.models.list()
        assert wh.key_status()[0].state is KeyState.COOLING
    assert fake.count() == 0


@pytest.mark.anyio
async def test_key_moves_are_bounded() -> None:
    seven = keys(7)
    fake = FakeWishub(seven)
    for key in seven:
        fake.fail(key, type="rate_limit_exceeded", retry_after="1", times=10)
    policy = RetryPolicy(attempts=2)
    moves = KeyPolicy(max_key_moves=2)
    async with fake.client(app_keys=seven, retry=policy, key_policy=moves) as wh:
        [outcome] = await wh.map(list_for_item, ["one"])
    assert isinstance(outcome.error, RateLimitError)
    assert outcome.attempts == 1 + 2 + 1  # first try, two moves, one retry
    assert fake.count() == 4


@pytest.mark.anyio
async def test_an_error_in_the_map_as_completed_block_is_raised_as_is() -> None:
    fake = FakeWishub([K1])

    class StopError(Exception):
        pass

    async def consume(wh: AsyncWishub) -> None:
        async with wh.map_as_completed(list_for_item, range(50)) as outcomes:
            async for _ in outcomes:
                raise StopError

    async with fake.client(app_key=K1) as wh:
        with pytest.raises(StopError):
            await consume(wh)
        assert len(await wh.models.list()) == 3
