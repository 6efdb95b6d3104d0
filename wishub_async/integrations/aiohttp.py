"""aiohttp: one ``AsyncWishub`` per application, through ``app.cleanup_ctx``.

For example:

    from aiohttp import web
    from wishub_async.integrations.aiohttp import get_wishub, wishub_cleanup_ctx

    async def models(request: web.Request) -> web.Response:
        listed = await get_wishub(request).models.list()
        return web.json_response(listed.ids)

    app = web.Application()
    app.cleanup_ctx.append(wishub_cleanup_ctx())
    app.router.add_get("/models", models)

Needs the ``wishub-async[aiohttp]`` extra; ``import wishub_async`` alone never
imports aiohttp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .. import AsyncWishub, ClientStateError

__all__ = ["WISHUB_CLIENT", "get_wishub", "wishub_cleanup_ctx"]

WISHUB_CLIENT = web.AppKey("wishub", AsyncWishub)
"""The typed application key under which the client is stored: ``app[WISHUB_CLIENT]``."""

_CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def wishub_cleanup_ctx(
    factory: Callable[[], AsyncWishub] = AsyncWishub,
    *,
    key: web.AppKey[AsyncWishub] = WISHUB_CLIENT,
) -> _CleanupContext:
    """A ``cleanup_ctx`` entry: open the client at startup, close it at cleanup.

    Args:
        factory: builds the client at startup. The default, ``AsyncWishub``, reads
            ``WISHUB_APP_KEY`` and ``WISHUB_BASE_URL``. ``lambda:
            AsyncWishub(backend="aiohttp")`` picks the faster asyncio transport.
        key: where to store the client, for apps that hold more than one.
    """

    async def wishub_client(app: web.Application) -> AsyncIterator[None]:
        async with factory() as client:
            app[key] = client
            yield

    return wishub_client


def get_wishub(request: web.Request, key: web.AppKey[AsyncWishub] = WISHUB_CLIENT) -> AsyncWishub:
    """The client of the request's application.

    Raises:
        ClientStateError: the application has no ``wishub_cleanup_ctx``.
    """
    try:
        return request.config_dict[key]
    except KeyError:
        raise ClientStateError(
            "no AsyncWishub on this application: add app.cleanup_ctx.append(wishub_cleanup_ctx())"
        ) from None
