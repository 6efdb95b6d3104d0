"""Checked by mypy, not run: the shared state on Redis as a user types it."""

from __future__ import annotations

import warnings
from typing import assert_type

import redis.asyncio

from wishub_async import AsyncWishub, RateLimit
from wishub_async.redis import RedisState, SharedStateWarning


async def check() -> None:
    state = RedisState.from_url(
        "redis://127.0.0.1:6379/0", namespace="myapp", hash_secret=b"s", timeout=0.5
    )
    assert_type(state, RedisState)
    assert_type(state.sharing, bool)
    own = RedisState(redis.asyncio.Redis(), namespace="other", close_client=True)
    async with AsyncWishub(limits=RateLimit(requests=60), state=state) as wh:
        await wh.models.list()
    async with AsyncWishub(state=own):
        pass
    await own.aclose()
    warnings.simplefilter("error", SharedStateWarning)
    assert issubclass(SharedStateWarning, RuntimeWarning)
