"""The trimmed hot path keeps its behaviour: limits, cancellation, converter errors."""

from __future__ import annotations

import anyio
import httpx
import pytest

from wishub_async import AsyncWishub
from wishub_async._converter import structure_json
from wishub_async._wire import WireRequest, WireResponse
from wishub_async.exceptions import ResponseValidationError
from wishub_async.models import ModelList

BODY = b'{"object":"list","data":[{"id":"m1","object":"model","created":"","owned_by":""}]}'
HEADERS = httpx.Headers({"content-type": "application/json"})


class GateTransport:
    """Holds every request until released; records how many were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.per_key: dict[str, int] = {}
        self.most_per_key = 0
        self.gate = anyio.Event()

    async def send(self, request: WireRequest) -> WireResponse:
        key = request.label
        self.in_flight += 1
        self.per_key[key] = self.per_key.get(key, 0) + 1
        self.most = max(self.most, self.in_flight)
        self.most_per_key = max(self.most_per_key, self.per_key[key])
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
            self.per_key[key] -= 1
        return WireResponse(200, HEADERS, BODY)

    async def aclose(self) -> None:
        pass


def _client(transport: GateTransport, **options: object) -> AsyncWishub:
    wh = AsyncWishub(
        app_keys=[f"fakehotpath{i:021d}" for i in range(4)],
        base_url="http://127.0.0.1:9/v1",
        **options,  # type: ignore[arg-type]
    )
    wh._shared.transport = transport
    return wh


@pytest.mark.anyio
async def test_limits_hold_without_a_checkpoint() -> None:
    transport = GateTransport()
    async with _client(transport, max_concurrency=3, per_key_concurrency=1) as wh:
        results: list[ModelList] = []

        async def one() -> None:
            results.append(await wh.models.list())

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            assert transport.in_flight == 3
            transport.gate.set()
    assert transport.most == 3
    assert transport.most_per_key == 1
    assert len(results) == 20
    assert wh._shared.limiter.borrowed_tokens == 0
    assert all(status.in_flight == 0 for status in wh.key_status())


@pytest.mark.anyio
async def test_cancelled_callers_give_their_tokens_back() -> None:
    transport = GateTransport()
    async with _client(transport, max_concurrency=2) as wh:
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(wh.models.list)
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()
        assert wh._shared.limiter.borrowed_tokens == 0
        transport.gate.set()
        assert len(await wh.models.list()) == 1


def test_converter_still_names_the_bad_field() -> None:
    body = b'{"object":"list","data":[{"id":"ok"},{"id":7}]}'
    with pytest.raises(ResponseValidationError) as caught:
        structure_json(body, ModelList)
    assert caught.value.path == "$.data[1].id"
    models = structure_json(BODY, ModelList)
    assert models.data[0].created is None
    assert structure_json(BODY, ModelList) == models
