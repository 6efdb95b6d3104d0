"""The platform's quota 429: a model's free quota has run out on a key.

It is a ``QuotaExceededError`` (not a rate limit), whichever envelope carries it and
whatever its type says; it is not retried on the same key; the key stops serving that
model only; with several keys the call moves on.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from conftest import K1, K2, over_http

from wishub_async import DEFAULT_ERROR_TABLE, KeyEffect, KeyPolicy, KeyState
from wishub_async.exceptions import QuotaExceededError, RateLimitError
from wishub_async.testing import FREE_QUOTA_ENDED, FakeWishub

SPENT, OTHER = "DeepSeek-V4-Pro", "GLM-5.1"
RERANK, PAINT, EMBED = "BGE-Reranker-V2-m3", "Qwen-Image", "BGE-m3"
ASK = [{"role": "user", "content": "hi"}]
Shape = Literal["error", "flat"]


@pytest.fixture
def fake() -> FakeWishub:
    models = [SPENT, OTHER, RERANK, PAINT, EMBED]
    return FakeWishub({K1: models, K2: models})


def test_the_error_table_row() -> None:
    rule = DEFAULT_ERROR_TABLE.rule_for(None, 429, None, FREE_QUOTA_ENDED)
    assert rule.exception is QuotaExceededError
    assert rule.retry is False
    assert rule.key_effect is KeyEffect.BLOCK_MODEL
    # The message decides, whatever the type or status say.
    assert DEFAULT_ERROR_TABLE.rule_for("rate_limit_exceeded", 429, None, FREE_QUOTA_ENDED) is rule
    assert DEFAULT_ERROR_TABLE.rule_for(None, 429, None, "slow down").exception is RateLimitError


async def ask(wh: Any, model: str) -> str:
    answer = await wh.chat.completions.create(model=model, messages=ASK)
    return str(answer.text)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["error", "flat"])
async def test_one_key_rests_from_that_model_only(
    fake: FakeWishub, transport: str, shape: Shape
) -> None:
    fake.end_free_quota(K1, SPENT, shape=shape)
    async with over_http(fake, backend=transport) as wh:
        with pytest.raises(QuotaExceededError) as caught:
            await ask(wh, SPENT)
        error = caught.value
        assert (error.status_code, error.message) == (429, FREE_QUOTA_ENDED)
        assert error.rule is not None
        assert error.rule.key_effect is KeyEffect.BLOCK_MODEL
        assert fake.count(K1) == 1  # not retried on the same key
        [status] = wh.key_status()
        assert status.state is KeyState.HEALTHY  # the key itself is fine
        assert list(status.resting_models) == [SPENT]
        assert status.last_error_type == "QuotaExceededError"
        assert await ask(wh, OTHER) == "You said: hi"  # other models still use it
        with pytest.raises(QuotaExceededError, match="not sent: key"):
            await ask(wh, SPENT)  # the key is not used for that model again
        assert fake.count(K1) == 2


@pytest.mark.anyio
async def test_whatever_the_type_says(fake: FakeWishub) -> None:
    fake.fail(K1, type="rate_limit_exceeded", status=429, message=FREE_QUOTA_ENDED, retry_after="1")
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(QuotaExceededError) as caught:
            await ask(wh, SPENT)
    assert caught.value.type == "rate_limit_exceeded"
    assert caught.value.retry_after == 1.0
    assert fake.count() == 1


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["error", "flat"])
async def test_several_keys_move_on(fake: FakeWishub, transport: str, shape: Shape) -> None:
    fake.end_free_quota(K1, SPENT, shape=shape)
    async with over_http(fake, backend=transport, app_keys={"a": K1, "b": K2}) as wh:
        [first] = await wh.map(ask, [SPENT])  # tried on "a" (first of two idle keys)
        assert (first.label, first.attempts, first.value) == ("b", 2, "You said: hi")
        outcomes = await wh.map(ask, [SPENT] * 4)
        assert [outcome.label for outcome in outcomes] == ["b"] * 4
        assert [outcome.attempts for outcome in outcomes] == [1] * 4
        statuses = {status.label: status for status in wh.key_status()}
        assert list(statuses["a"].resting_models) == [SPENT]
        assert statuses["b"].resting_models == {}
        others = await wh.map(ask, [OTHER] * 4)
        assert {outcome.label for outcome in others} == {"a", "b"}  # "a" still serves GLM
    spent = [request for request in fake.requests if request.status == 429]
    assert len(spent) == 1  # one 429, then "a" is never sent SPENT again
    assert spent[0].key == K1


@pytest.mark.anyio
async def test_every_key_spent(fake: FakeWishub) -> None:
    fake.end_free_quota(None, SPENT)
    async with fake.client(app_keys=[K1, K2]) as wh:
        with pytest.raises(QuotaExceededError):
            await ask(wh, SPENT)
        assert fake.count() == 2  # each key once, no retries
        with pytest.raises(QuotaExceededError):
            await ask(wh, SPENT)
        assert fake.count() == 2  # nothing sent: both keys rest from SPENT
        assert await ask(wh, OTHER) == "You said: hi"


@pytest.mark.anyio
async def test_rerank_images_and_embeddings_name_their_model(fake: FakeWishub) -> None:
    for model in (RERANK, PAINT, EMBED):
        fake.end_free_quota(K1, model, shape="flat")
    async with fake.client(app_key=K1) as wh:
        with pytest.raises(QuotaExceededError):
            await wh.rerank.create(model=RERANK, query="q", documents=["d"])
        with pytest.raises(QuotaExceededError):
            await wh.images.generate(model=PAINT, prompt="p")
        with pytest.raises(QuotaExceededError):
            await wh.embeddings.create(model=EMBED, input="x")
        [status] = wh.key_status()
        assert sorted(status.resting_models) == sorted([RERANK, PAINT, EMBED])
        assert await ask(wh, SPENT) == "You said: hi"
    assert fake.count() == 4


@pytest.mark.anyio
async def test_the_key_serves_the_model_again_after_the_rest(fake: FakeWishub) -> None:
    fake.end_free_quota(K1, SPENT)
    async with fake.client(app_key=K1, key_policy=KeyPolicy(quota_cooldown=1.0)) as wh:
        with pytest.raises(QuotaExceededError):
            await ask(wh, SPENT)
        fake.restore_free_quota(K1, SPENT)
        assert await ask(wh, SPENT) == "You said: hi"  # waited out (instantly in tests)
        assert wh.key_status()[0].resting_models == {}
    assert fake.count() == 2
