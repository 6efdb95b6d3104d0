"""OpenTelemetry spans for wishub-async calls (needs ``wishub-async[opentelemetry]``).

One client span per call, around its retries::

    from wishub_async import AsyncWishub
    from wishub_async.integrations.opentelemetry import tracing_middleware

    wh = AsyncWishub(middleware=[tracing_middleware()])

It costs nothing unless you use it: this module is the only one importing
``opentelemetry``, and without an SDK configured the API's spans are no-ops. Spans
carry the key's label, never the key. For a stream, the span ends when the stream
starts (the call's retries are over); the stream's own end is in the request-end hook.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import APIError, Handler, Middleware, Request, Response, WishubError, __version__

__all__ = ["tracing_middleware"]


def tracing_middleware(tracer: trace.Tracer | None = None) -> Middleware:
    """A middleware that wraps each call in a client span.

    Args:
        tracer: the tracer to use; default: the global tracer provider's
            ``wishub_async`` tracer.

    The span is named ``wishub GET /models`` and has the attributes
    ``http.request.method``, ``url.path``, ``http.response.status_code``,
    ``wishub.key`` (the label), ``wishub.attempts`` and, on failure, ``error.type``
    (the platform's error type or our exception's class).
    """
    chosen = tracer or trace.get_tracer("wishub_async", __version__)

    async def traced(request: Request, call_next: Handler) -> Response:
        with chosen.start_as_current_span(
            f"wishub {request.method} {request.path}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": request.method, "url.path": request.path},
            record_exception=False,  # our messages are safe, but the status says enough
            set_status_on_exception=False,
        ) as span:
            try:
                response = await call_next(request)
            except WishubError as error:
                span.set_attribute(
                    "error.type", getattr(error, "type", None) or type(error).__name__
                )
                if isinstance(error, APIError):
                    span.set_attribute("http.response.status_code", error.status_code)
                if label := getattr(error, "label", None):
                    span.set_attribute("wishub.label", label)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            span.set_attribute("wishub.label", response.label)
            span.set_attribute("wishub.attempts", response.attempts)
            return response

    return traced
