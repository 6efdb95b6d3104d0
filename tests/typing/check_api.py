"""Checked by mypy (not run): the public API's types as a user sees them."""

from __future__ import annotations

from datetime import datetime
from typing import assert_type

import attrs
import httpx

from wishub_async import AsyncWishub, KeyStatus, Outcome, OutcomeList, RetryPolicy
from wishub_async.exceptions import APIError, WishubError
from wishub_async.models import Model, ModelList


async def user_code() -> None:
    async with AsyncWishub(app_key="k" * 32, timeout=httpx.Timeout(30.0)) as wh:
        models = await wh.models.list()
        assert_type(models, ModelList)
        for model in models:
            assert_type(model, Model)
            assert_type(model.id, str)
            assert_type(model.created, datetime | None)
        view = wh.with_key("default").with_options(retry=RetryPolicy(attempts=5))
        assert_type(view, AsyncWishub)
        outcomes = await wh.fan_out(lambda c: c.models.list())
        assert_type(outcomes, OutcomeList[ModelList])
        first = outcomes[0]
        assert_type(first, Outcome[ModelList])
        assert_type(first.unwrap(), ModelList)
        assert_type(first.error, Exception | None)

        async def ask(c: AsyncWishub, question: str) -> int:
            return len(await c.models.list()) + len(question)

        mapped = await wh.map(ask, ["a", "b"])
        assert_type(mapped, OutcomeList[int])
        assert_type(wh.key_status(), list[KeyStatus])
        policy = attrs.evolve(RetryPolicy(), deadline=30.0)
        assert_type(policy.deadline, float | None)
    try:
        await wh.models.list()
    except APIError as error:
        assert_type(error.status_code, int)
        assert_type(error.code, int | None)
    except WishubError:
        pass


def framework_code() -> None:
    from aiohttp import web  # noqa: PLC0415 - the frameworks are optional extras
    from fastapi import FastAPI  # noqa: PLC0415

    from wishub_async.integrations import aiohttp as wishub_aiohttp  # noqa: PLC0415
    from wishub_async.integrations.fastapi import WishubDep, wishub_lifespan  # noqa: PLC0415

    app = FastAPI(lifespan=wishub_lifespan(lambda: AsyncWishub(max_concurrency=10)))

    @app.get("/models")
    async def models(wh: WishubDep) -> list[str]:
        assert_type(wh, AsyncWishub)
        return (await wh.models.list()).ids

    web_app = web.Application()
    web_app.cleanup_ctx.append(wishub_aiohttp.wishub_cleanup_ctx())

    async def handler(request: web.Request) -> web.Response:
        assert_type(wishub_aiohttp.get_wishub(request), AsyncWishub)
        assert_type(request.app[wishub_aiohttp.WISHUB_CLIENT], AsyncWishub)
        return web.Response()

    web_app.router.add_get("/", handler)
