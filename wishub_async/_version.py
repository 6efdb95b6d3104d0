"""The installed version of wishub-async."""

from __future__ import annotations

import importlib.metadata

__all__ = ["__version__"]

try:
    __version__ = importlib.metadata.version("wishub-async")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
    __version__ = "0.0.0"
