"""A FastAPI service on wishub-async: one client per app, closed on shutdown.

Run it (``pip install "wishub-async[fastapi]" uvicorn``)::

    WISHUB_APP_KEY=... uvicorn fastapi_app:app --app-dir examples

Routes live on ``router``: add one with ``@router.get(...)`` or ``@router.post(...)``
and a ``wh: WishubDep`` parameter. Errors of the platform become JSON answers in
``wishub_error`` (see ``ERROR_STATUS``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

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


class Question(BaseModel):
    """The body of ``POST /chat``."""

    model: str
    prompt: str


@router.post("/chat")
async def chat(question: Question, wh: WishubDep) -> StreamingResponse:
    """Relay a streamed answer to the HTTP client, token by token.

    The call is made before the response starts, so a failure to start (a wrong key,
    an unknown model) still becomes a JSON error; the stream is closed when the
    relay ends, when the HTTP client goes away, or on an error mid-answer.
    """
    messages = [{"role": "user", "content": question.prompt}]
    stream = await wh.chat.completions.create(model=question.model, messages=messages, stream=True)

    async def tokens() -> AsyncIterator[str]:
        async with stream:
            async for chunk in stream:
                if chunk.text:
                    yield chunk.text

    return StreamingResponse(tokens(), media_type="text/plain; charset=utf-8")


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
