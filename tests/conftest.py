from __future__ import annotations

from collections.abc import Iterator

import pytest

from wishub_async.testing import instant_waits


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Tests marked ``pytest.mark.anyio`` run on both backends."""
    return str(request.param)


@pytest.fixture
def instant() -> Iterator[None]:
    """Retry backoffs and key cooling take no time."""
    with instant_waits():
        yield
