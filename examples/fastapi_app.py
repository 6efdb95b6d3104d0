"""A FastAPI service on wishub-async: one client per app, closed on shutdown.

Run it (``pip install "wishub-async[fastapi]" uvicorn``)::

    WISHUB_APP_KEY=... uvicorn fastapi_app:app --app-dir examples

Routes live on ``router``: add one with ``@router.get(...)`` or ``@router.post(...)``
and a ``wh: WishubDep`` parameter. Errors of the platform become JSON answers in
``wishub_error`` (see ``ERROR_STATUS``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from wishub_async import AsyncWishub
from wishub_async.exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    KeyUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from wishub_async.integrations.fastapi import WishubDep, wishub_lifespan

router = APIRouter()


@router.get("/models")
async def list_models(wh: WishubDep) -> dict[str, list[str]]:
    """The model ids our AppKey may call."""
    models = await wh.models.list()
    return {"models": models.ids}


@router.get("/keys")
async def key_health(wh: WishubDep) -> list[dict[str, str]]:
    """Each AppKey's health, by label and redacted id: never the key itself."""
    return [
        {"label": status.label, "key": status.redacted, "state": status.state}
        for status in wh.key_status()
    ]


# Most specific first: the first class an error is an instance of decides.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (RateLimitError, 503),
    (QuotaExceededError, 503),
    (KeyUnavailableError, 503),
    (APITimeoutError, 504),
    (APIError, 502),
    (APIConnectionError, 502),
)
"""Our HTTP status for each failure upstream: the platform is our gateway's backend."""


async def wishub_error(_request: Request, exc: Exception) -> JSONResponse:
    """Answer for a platform failure: the error's class and type, no key, no label."""
    status = next(code for cls, code in ERROR_STATUS if isinstance(exc, cls))
    error = {
        "class": type(exc).__name__,
        "type": getattr(exc, "type", None),
        "request_id": getattr(exc, "request_id", None),
    }
    return JSONResponse({"error": error}, status_code=status)


def create_app(factory: Callable[[], AsyncWishub] = AsyncWishub) -> FastAPI:
    """The app; ``factory`` builds its one client at startup (tests pass a fake's)."""
    app = FastAPI(title="wishub-async example", lifespan=wishub_lifespan(factory))
    app.include_router(router)
    for cls, _ in ERROR_STATUS:
        app.add_exception_handler(cls, wishub_error)
    return app


app = create_app()
