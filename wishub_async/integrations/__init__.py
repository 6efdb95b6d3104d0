"""Helpers for web frameworks: one ``AsyncWishub`` per app, closed when the app stops.

- ``wishub_async.integrations.fastapi``: a lifespan and a ``Depends`` getter
  (needs the ``wishub-async[fastapi]`` extra).
- ``wishub_async.integrations.aiohttp``: a ``cleanup_ctx`` and a getter
  (needs the ``wishub-async[aiohttp]`` extra).
- ``wishub_async.integrations.opentelemetry``: a span per call, as middleware
  (needs the ``wishub-async[opentelemetry]`` extra).

Importing ``wishub_async`` never imports a framework: only these modules do.
"""

from __future__ import annotations

__all__: list[str] = []
