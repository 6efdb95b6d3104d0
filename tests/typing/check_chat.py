"""Checked by mypy, not run: the overloads give each call its precise type."""

from __future__ import annotations

from typing import assert_type

from wishub_async import AsyncWishub, ChatStream
from wishub_async.models import ChatCompletion, ChatCompletionChunk, EmbeddingList


async def check(wh: AsyncWishub, flag: bool) -> None:
    messages = [{"role": "user", "content": "hi"}]
    whole = await wh.chat.completions.create(model="m", messages=messages, temperature=0.2)
    assert_type(whole, ChatCompletion)
    stream = await wh.chat.completions.create(
        model="m", messages=messages, stream=True, idle_timeout=5
    )
    assert_type(stream, ChatStream)
    async with stream:
        async for chunk in stream:
            assert_type(chunk, ChatCompletionChunk)
        assert_type(await stream.collect(), ChatCompletion)
    either = await wh.chat.completions.create(model="m", messages=messages, stream=flag)
    assert_type(either, ChatCompletion | ChatStream)
    vectors = await wh.embeddings.create(model="e", input=["a"], encoding_format="base64")
    assert_type(vectors, EmbeddingList)
    await wh.chat.completions.create(model="m", messages=messages, temprature=1)  # type: ignore[call-overload]
    await wh.chat.completions.create(model="m", messages=messages, idle_timeout=1)  # type: ignore[call-overload]
