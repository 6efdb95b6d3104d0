"""Rate budgets per key and model: the window, adaptive rates, and the budget step.

The budget states take the time as an argument, so most tests drive them with times
of their own. The end-to-end tests run short windows against the fake's own limits
and assert on what the fake counted (rejections, calls per key), never on durations.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from conftest import K1, K2, over_http
from hypothesis import given, settings
from hypothesis import strategies as st

from wishub_async import (
    APITimeoutError,
    AsyncWishub,
    BudgetExceededError,
    BudgetWaited,
    ConfigurationError,
    Hooks,
    RateLimit,
    RetryPolicy,
    published_limits,
)
from wishub_async._budget import (
    DEFAULT_COMPLETION_TOKENS,
    PUBLISHED_ON,
    AdaptiveRate,
    Answer,
    Limits,
    Window,
    estimate_tokens,
)
from wishub_async._json import dumps
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

KEYS = [f"{n:032x}" for n in range(1, 5)]


# -- RateLimit and limits= ------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"requests": 0},
        {"requests": -1},
        {"requests": 1.5},
        {"requests": True},
        {"tokens": 0},
        {"per": 0},
        {"per": -1},
        {"per": math.nan},
        {"per": math.inf},
        {"per": "60"},
    ],
)
def test_a_bad_rate_limit_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimit(**fields)


def test_limits_take_one_limit_or_a_mapping_with_a_default() -> None:
    one = RateLimit(requests=10)
    assert Limits.of(one).for_model("any") is one
    table = Limits.of({"*": one, "big": RateLimit(requests=100)})
    assert table.for_model("big") == RateLimit(requests=100)
    assert table.for_model("other") is one
    assert Limits.of({"only": one}).for_model("other") is None  # adapts
    assert Limits.of(None).for_model("m") is None
    assert RateLimit().unlimited
    for bad in (5, {"m": 5}, {3: one}, "60/min"):
        with pytest.raises(ConfigurationError, match="limits="):
            Limits.of(bad)


def test_limits_are_checked_by_the_constructor_and_with_options() -> None:
    with pytest.raises(ConfigurationError):
        AsyncWishub(app_key=K1, limits=5)  # type: ignore[arg-type]
    wh = AsyncWishub(app_key=K1)
    with pytest.raises(ConfigurationError):
        wh.with_options(limits={"m": "fast"})  # type: ignore[dict-item]


def test_published_limits_are_dated_data() -> None:
    published = published_limits()
    assert PUBLISHED_ON == "2026-05-29"
    assert published["DeepSeek-V4-Flash"] == RateLimit(requests=250, tokens=600_000, per=60.0)
    assert published["BGE-m3"].requests == 1_800
    published["GLM-5.1"] = RateLimit(requests=1)  # a copy: the caller's to change
    assert published_limits()["GLM-5.1"].requests == 1_000


# -- the window ------------------------------------------------------------------------


def test_a_window_counts_a_call_until_per_after_its_answer() -> None:
    window = Window(RateLimit(requests=2, per=10.0))
    window.take(0.0, 0)
    window.take(0.0, 0)
    assert not window.fits(0.0, 0)
    window.finish(3.0, 0, None, Answer.OK, 0.0)  # answered at 3: counted until 13
    assert not window.fits(12.9, 0)
    assert window.free_at(12.9) == 13.0
    assert window.fits(13.0, 0)  # one left the window; one is still in flight
    window.take(13.0, 0)
    assert not window.fits(13.0, 0)
    window.finish(14.0, 0, None, Answer.OK, 13.0)
    assert not window.fits(14.0, 0)  # in the window until 24
    window.finish(14.0, 0, None, Answer.OK, 0.0)


def test_a_window_reconciles_tokens_with_what_the_answer_spent() -> None:
    window = Window(RateLimit(tokens=1000, per=60.0))
    window.take(0.0, 800)
    assert not window.fits(0.0, 300)
    window.finish(1.0, 800, 100, Answer.OK, 0.0)  # it spent only 100
    assert window.fits(1.0, 900)
    assert not window.fits(1.0, 901)
    window.take(1.0, 500)
    window.cancel(500)  # never sent: nothing counts
    assert window.fits(1.0, 900)


def test_a_call_the_answer_did_not_report_keeps_its_reservation() -> None:
    window = Window(RateLimit(tokens=1000, per=60.0))
    window.take(0.0, 800)
    window.finish(1.0, 800, None, Answer.OK, 0.0)
    assert window.status(1.0, 0.0).tokens_used == 800
    assert not window.fits(1.0, 201)


def test_free_at_puts_a_newcomer_behind_the_calls_already_waiting() -> None:
    window = Window(RateLimit(requests=2, per=10.0))
    for answered in (1.0, 2.0):
        window.take(0.0, 0)
        window.finish(answered, 0, None, Answer.OK, 0.0)
    assert window.free_at(5.0) == 11.0
    window.waiting = 1
    assert window.free_at(5.0) == 12.0
    window.waiting = 2
    assert window.free_at(5.0) == 15.0  # beyond what is known: a whole window on


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(st.tuples(st.floats(0, 3), st.floats(0, 2), st.floats(0, 2)), min_size=1, max_size=60),
)
def test_no_window_of_per_seconds_ever_holds_too_many_arrivals(
    requests: int, calls: list[tuple[float, float, float]]
) -> None:
    """However late a call arrives after its reservation (up to its answer), never more
    than ``requests`` arrive at the server within any ``per`` seconds."""
    per = 1.0
    window = Window(RateLimit(requests=requests, per=per))
    now = 0.0
    arrivals: list[float] = []
    flying: list[float] = []
    for gap, delay, latency in calls:
        now += gap
        for answered in sorted(a for a in flying if a <= now):
            window.finish(answered, 0, None, Answer.OK, 0.0)
            flying.remove(answered)
        if window.fits(now, 0):
            window.take(now, 0)
            arrivals.append(now + delay)  # the server counts it when it arrives
            flying.append(now + delay + latency)  # the answer comes after that
    arrivals.sort()
    for start in arrivals:
        assert sum(1 for a in arrivals if start <= a < start + per) <= requests


# -- adaptive rates ----------------------------------------------------------------------


def test_an_adaptive_rate_starts_slowly_and_doubles_each_second_of_success() -> None:
    rate = AdaptiveRate()
    first = rate.rate
    now = 0.0
    sent = 0
    while now < 1.0:
        if rate.fits(now, 0):
            rate.take(now, 0)
            rate.finish(now, 0, None, Answer.OK, now)
            sent += 1
        now += 0.001
    assert rate.rate >= 2 * first
    assert sent < 6 * first  # no flood in the first second


def test_a_rate_limit_cuts_once_per_round_and_recovers_towards_the_peak() -> None:
    rate = AdaptiveRate(rate=100.0)
    rate.take(0.0, 0)
    rate.take(0.0, 0)
    rate.take(0.5, 0)
    rate.finish(1.0, 0, None, Answer.RATE_LIMITED, 0.0)
    assert rate.rate == pytest.approx(50.0)  # the first cut ends the slow start: half
    rate.finish(1.1, 0, None, Answer.RATE_LIMITED, 0.5)  # no success since the cut
    assert rate.rate == pytest.approx(50.0)
    rate.take(1.2, 0)
    rate.finish(1.3, 0, None, Answer.OTHER, 1.2)  # a server error says nothing
    assert rate.rate == pytest.approx(50.0)
    for step in range(500):
        rate.take(2 + step * 0.01, 0)
        rate.finish(2 + step * 0.01, 0, None, Answer.OK, 2 + step * 0.01)
    assert 90.0 <= rate.rate <= 100.0  # back near 95 % of the peak in seconds, not past it
    rate.take(5.0, 0)
    rate.finish(5.0, 0, None, Answer.RATE_LIMITED, 5.0)
    assert rate.rate < 70.0  # a success came between: it cuts again, to 70 % this time


def test_a_quota_answer_is_not_a_rate_signal() -> None:
    rate = AdaptiveRate(rate=50.0)
    rate.take(0.0, 0)
    rate.finish(0.1, 0, None, Answer.OTHER, 0.0)
    assert rate.rate == 50.0
    rate.take(0.2, 0)
    level = rate.level
    rate.cancel(0)
    assert rate.level == level + 1
    assert rate.flying == 0


# -- estimating tokens -------------------------------------------------------------------


def _estimate(body: Any) -> int:
    return estimate_tokens(body, None if body is None else dumps(body))


def test_the_estimate_counts_a_character_a_token_and_the_answer() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "你好世界"}], "max_tokens": 5}
    sent = '{"model":"m","messages":[{"role":"user","content":"你好世界"}],"max_tokens":5}'
    assert _estimate(chat) == len(sent) + 5  # a Chinese character counts once, not 3 bytes
    parts = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}],
    }
    assert _estimate(parts) == len(dumps(parts)) + DEFAULT_COMPLETION_TOKENS
    assert _estimate({"model": "e", "input": ["一二三", "four"], "max_tokens": None}) == len(
        '{"model":"e","input":["一二三","four"],"max_tokens":null}'
    )
    assert (
        _estimate({"messages": [], "max_completion_tokens": 7})
        == len('{"messages":[],"max_completion_tokens":7}') + 7
    )
    assert _estimate({"messages": [], "max_tokens": True}) > DEFAULT_COMPLETION_TOKENS
    assert _estimate(None) == 0


_TEXT = st.text(st.characters(codec="utf-8"))  # JSON has no lone surrogates


@given(st.recursive(_TEXT, lambda inner: st.lists(inner) | st.dictionaries(_TEXT, inner)))
def test_the_estimate_never_counts_fewer_than_the_strings_characters(body: Any) -> None:
    def characters(value: Any) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, dict):
            return sum(characters(k) + characters(v) for k, v in value.items())
        return sum(map(characters, value))

    assert _estimate(body) >= characters(body)


# -- the budget step, end to end -----------------------------------------------------------


async def embed(view: AsyncWishub, _: object = None) -> int:
    return len(await view.embeddings.create(model=DEFAULT_MODELS[0], input="hi"))


@pytest.mark.anyio
@pytest.mark.real_waits
@pytest.mark.parametrize("style", ["sliding", "fixed", "bucket"])
async def test_a_configured_limit_is_never_exceeded(style: Any) -> None:
    fake = FakeWishub(KEYS)
    limit = fake.limit(requests=3, per=0.3, style=style)
    async with fake.client(app_keys=KEYS, limits=RateLimit(requests=3, per=0.3)) as wh:
        outcomes = await wh.map(embed, range(40))  # more than three windows of four keys
    assert outcomes.values == [1] * 40
    assert limit.rejected == 0
    assert limit.accepted == 40


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_without_a_configured_limit_the_rate_adapts() -> None:
    """Against the same unknown limit, adapting sends far fewer calls to be rejected
    than a client with adaptation turned off (``RateLimit()``)."""
    rejected = {}
    for name, limits in (("adaptive", None), ("off", RateLimit())):
        fake = FakeWishub(KEYS[:2])
        limit = fake.limit(requests=4, per=0.4)
        policy = RetryPolicy(attempts=20, max_retry_after=2)
        async with fake.client(app_keys=KEYS[:2], limits=limits, retry=policy) as wh:
            outcomes = await wh.map(embed, range(60))
        assert outcomes.values == [1] * 60
        rejected[name] = limit.rejected
    assert rejected["adaptive"] * 2 < rejected["off"]


@pytest.mark.anyio
async def test_a_call_that_could_never_fit_fails_at_once() -> None:
    fake = FakeWishub([K1])
    model = fake.models[0]
    async with fake.client(app_key=K1, limits=RateLimit(tokens=100)) as wh:
        with pytest.raises(BudgetExceededError, match="could never be sent"):
            await wh.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x" * 200}], max_tokens=1
            )
    assert fake.count() == 0


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_wait_for_budget_counts_towards_the_deadline() -> None:
    fake = FakeWishub([K1])
    limits = RateLimit(requests=1, per=30.0)
    async with fake.client(app_key=K1, limits=limits, retry=RetryPolicy(deadline=0.5)) as wh:
        assert await embed(wh) == 1
        with anyio.fail_after(10), pytest.raises(APITimeoutError, match="deadline"):
            await embed(wh)
    assert fake.count() == 1


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_cancelling_calls_that_wait_for_budget_leaks_nothing() -> None:
    fake = FakeWishub([K1])
    model = fake.models[0]
    async with fake.client(app_key=K1, limits=RateLimit(requests=1, per=30.0)) as wh:
        assert await embed(wh) == 1
        with anyio.move_on_after(0.2):
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(embed, wh)
        [status] = wh.key_status()
        budget = status.budgets[model]
        assert budget.waiting == 0
        assert budget.requests_used == 1  # the first call only: nothing else counted
        assert status.in_flight == 0
        assert wh._shared.limiter.borrowed_tokens == 0
    assert fake.count() == 1


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_waiting_calls_spread_over_the_keys() -> None:
    fake = FakeWishub(KEYS[:2])
    async with fake.client(app_keys=KEYS[:2], limits=RateLimit(requests=2, per=0.3)) as wh:
        assert (await wh.map(embed, range(12))).values == [1] * 12
    assert fake.count(KEYS[0]) == fake.count(KEYS[1]) == 6


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_budgets_show_in_key_status_and_waits_in_a_hook() -> None:
    fake = FakeWishub([K1])
    model = fake.models[0]
    waits: list[BudgetWaited] = []
    hooks = Hooks(on_budget_wait=waits.append)
    limits = RateLimit(requests=2, tokens=50_000, per=0.3)
    async with fake.client(app_key=K1, limits=limits, hooks=hooks) as wh:
        await wh.map(embed, range(4))
        [status] = wh.key_status()
    budget = status.budgets[model]
    assert budget.limit == limits
    assert budget.requests_used == 2
    assert budget.requests_free == 0
    assert budget.free_at is not None
    assert budget.tokens_used > 0  # the answers' usage
    assert waits
    assert {(w.label, w.model) for w in waits} == {(status.label, model)}
    assert all(w.seconds > 0 for w in waits)


@pytest.mark.anyio
async def test_token_budgets_reconcile_with_the_answers_usage() -> None:
    fake = FakeWishub([K1])
    model = fake.models[0]
    ask = [{"role": "user", "content": "hello there"}]
    async with fake.client(app_key=K1, limits=RateLimit(tokens=100_000)) as wh:
        answer = await wh.chat.completions.create(model=model, messages=ask, max_tokens=500)
        assert answer.usage is not None
        assert wh.key_status()[0].budgets[model].tokens_used == answer.usage.total_tokens
        stream = await wh.chat.completions.create(model=model, messages=ask, stream=True)
        completion = await stream.collect()
        assert completion.usage is not None  # asked for by default, to reconcile with
        used = answer.usage.total_tokens + completion.usage.total_tokens
        assert wh.key_status()[0].budgets[model].tokens_used == used
        silent = await wh.chat.completions.create(
            model=model, messages=ask, stream=True, stream_options={}, max_tokens=40
        )
        await silent.collect()  # no usage chunk: it keeps its reservation
        reserved = _estimate({"model": model, "messages": ask, "max_tokens": 40})
        assert wh.key_status()[0].budgets[model].tokens_used >= used + reserved - 20


@pytest.mark.anyio
async def test_a_rate_limit_rests_the_key_for_that_model_only() -> None:
    fake = FakeWishub([K1])
    chat_model, other = fake.models[0], fake.models[1]
    fake.fail(K1, type="rate_limit_exceeded", retry_after="30", times=2)
    async with fake.client(app_key=K1, retry=RetryPolicy(attempts=2)) as wh:
        with pytest.raises(Exception, match="rate") as caught:
            await wh.embeddings.create(model=chat_model, input="x")
        assert type(caught.value).__name__ == "RateLimitError"
        assert len(await wh.embeddings.create(model=other, input="x")) == 1
        assert set(wh.key_status()[0].resting_models) == {chat_model}


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_view_can_have_limits_of_its_own(transport: Any) -> None:
    fake = FakeWishub([K1, K2])
    limit = fake.limit(requests=2, per=0.3)
    async with over_http(fake, app_keys={"a": K1, "b": K2}, backend=transport) as wh:
        careful = wh.with_options(limits=RateLimit(requests=2, per=0.3))
        assert (await careful.map(embed, range(12))).values == [1] * 12
    assert limit.rejected == 0
