"""An aiohttp service on wishub-async: one client per application, via ``cleanup_ctx``.

Run it (``pip install "wishub-async[aiohttp]"``)::

    WISHUB_APP_KEY=... python examples/aiohttp_app.py

Add a route with ``routes.get(...)`` / ``routes.post(...)``; inside, ``get_wishub(request)``
returns the application's client.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from wishub_async import AsyncWishub
from wishub_async.exceptions import APIConnectionError, APIError, KeyUnavailableError
from wishub_async.integrations.aiohttp import get_wishub, wishub_cleanup_ctx

routes = web.RouteTableDef()
_dumps = functools.partial(json.dumps, ensure_ascii=False)


def reply(data: Any, *, status: int = 200) -> web.Response:
    """A JSON answer that keeps non-ASCII model ids readable."""
    return web.json_response(data, status=status, dumps=_dumps)


@routes.get("/models")
async def list_models(request: web.Request) -> web.Response:
    """The model ids our AppKey may call; 502 when the platform fails."""
    try:
        models = await get_wishub(request).models.list()
    except KeyUnavailableError:
        return reply({"error": {"class": "KeyUnavailableError"}}, status=503)
    except (APIError, APIConnectionError) as exc:
        error = {"class": type(exc).__name__, "type": getattr(exc, "type", None)}
        return reply({"error": error}, status=502)
    return reply({"models": models.ids})


@routes.get("/keys")
async def key_health(request: web.Request) -> web.Response:
    """Each AppKey's health, by label and redacted id: never the key itself."""
    statuses = get_wishub(request).key_status()
    return reply([{"label": s.label, "key": s.redacted, "state": s.state} for s in statuses])


def create_app(factory: Callable[[], AsyncWishub] = AsyncWishub) -> web.Application:
    """The application; ``factory`` builds its one client at startup."""
    app = web.Application()
    app.cleanup_ctx.append(wishub_cleanup_ctx(factory))
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8080)
