"""FastAPI: one ``AsyncWishub`` per app, opened at startup and closed at shutdown.

The client lives on ``app.state.wishub``; route handlers ask for it with
``WishubDep`` (or ``Depends(get_wishub)``):

    from fastapi import FastAPI
    from wishub_async.integrations.fastapi import WishubDep, wishub_lifespan

    app = FastAPI(lifespan=wishub_lifespan())

    @app.get("/models")
    async def models(wh: WishubDep) -> list[str]:
        return (await wh.models.list()).ids

Needs the ``wishub-async[fastapi]`` extra; ``import wishub_async`` alone never
imports FastAPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from .. import AsyncWishub, ClientStateError

__all__ = ["STATE_ATTRIBUTE", "WishubDep", "attach_wishub", "get_wishub", "wishub_lifespan"]

STATE_ATTRIBUTE = "wishub"
"""The ``app.state`` attribute that holds the client."""


@asynccontextmanager
async def attach_wishub(app: FastAPI, client: AsyncWishub) -> AsyncIterator[AsyncWishub]:
    """Open ``client``, publish it as ``app.state.wishub``; on exit remove and close it.

    Use it inside a lifespan of your own, next to your other resources:

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with attach_wishub(app, AsyncWishub(max_concurrency=50)):
                yield
    """
    async with client:
        setattr(app.state, STATE_ATTRIBUTE, client)
        try:
            yield client
        finally:
            delattr(app.state, STATE_ATTRIBUTE)


def wishub_lifespan(
    factory: Callable[[], AsyncWishub] = AsyncWishub,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that runs ``attach_wishub``.

    Args:
        factory: builds the client at startup (not at import time, so settings
            and the ``WISHUB_*`` environment are read when the app starts). The
            default, ``AsyncWishub``, reads ``WISHUB_APP_KEY`` and ``WISHUB_BASE_URL``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with attach_wishub(app, factory()):
            yield

    return lifespan


async def get_wishub(connection: HTTPConnection) -> AsyncWishub:
    """The app's client, for ``Depends(get_wishub)`` in HTTP and WebSocket routes.

    It is a coroutine function so that FastAPI calls it on the event loop instead
    of sending it to its thread pool.

    Raises:
        ClientStateError: the app was started without ``wishub_lifespan`` or
            ``attach_wishub``.
    """
    client = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(client, AsyncWishub):
        raise ClientStateError(
            "no AsyncWishub on app.state: create the app with"
            " FastAPI(lifespan=wishub_lifespan()) or use attach_wishub() in its lifespan"
        )
    return client


WishubDep = Annotated[AsyncWishub, Depends(get_wishub)]
"""Annotate a route parameter with it to receive the app's ``AsyncWishub``."""
