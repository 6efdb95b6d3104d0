"""Test helpers for wishub-async and for apps built on it.

- ``FakeWishub``: a scriptable fake platform, in-process or on a loopback port.
- ``instant_waits()``: make every retry and cooling wait instant.

This package is built on the public API, like any user's code, with one exception:
``instant_waits()`` flips the request path's test switch (``_clock``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .. import _clock
from ._chat import FakeChat, FakeEmbeddings, StreamFailure
from ._fake import DEFAULT_MODELS, FREE_QUOTA_ENDED, Failure, FakeRequest, FakeWishub, Reply
from ._images import FakeImages
from ._limits import FakeLimit, LimitStyle
from ._rerank import FakeRerank

__all__ = [
    "DEFAULT_MODELS",
    "FREE_QUOTA_ENDED",
    "Failure",
    "FakeChat",
    "FakeEmbeddings",
    "FakeImages",
    "FakeLimit",
    "FakeRequest",
    "FakeRerank",
    "FakeWishub",
    "LimitStyle",
    "Reply",
    "StreamFailure",
    "instant_waits",
]


@contextmanager
def instant_waits() -> Iterator[None]:
    """Within this block, retry backoffs, Retry-After and key cooling take no time.

    Waits are still decided and logged; only the sleeping is skipped:

        with instant_waits():
            await wh.models.list()  # retries at once
    """
    previous = _clock.instant_waits_enabled()
    _clock.set_instant_waits(True)
    try:
        yield
    finally:
        _clock.set_instant_waits(previous)
