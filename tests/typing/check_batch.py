"""Checked by mypy, not run: the batch API's types as a caller sees them."""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

from wishub_async import AsyncWishub, Response
from wishub_async.batch import (
    BatchPlan,
    BatchResponse,
    BatchResult,
    BatchStatus,
    BatchSummary,
    check_batch,
    iter_batch,
    run_batch,
)


async def check(wh: AsyncWishub) -> None:
    summary = await run_batch(wh, Path("in.jsonl"), "out.jsonl", errors_path=None)
    assert_type(summary, BatchSummary)
    assert_type(summary.rate, float)
    assert_type(await check_batch("in.jsonl", "out.jsonl"), BatchPlan)
    async with iter_batch(wh, "in.jsonl", done={"q-1"}) as results:
        async for result in results:
            assert_type(result, BatchResult)
            assert_type(result.status, BatchStatus)
            assert_type(result.response, BatchResponse | None)
    assert_type(await wh.request("POST", "/embeddings", json={"model": "e"}), Response)
    await run_batch(wh, "in.jsonl", "out.jsonl", fsync_interval="1")  # type: ignore[arg-type]
