"""Observability hooks: request ends, retries, key state changes."""

from __future__ import annotations

import logging

import pytest
from conftest import K1, K2, WRONG

from wishub_async import (
    Hooks,
    KeyState,
    KeyStateChanged,
    RequestEnded,
    RetryPolicy,
    RetryScheduled,
)
from wishub_async.exceptions import ServerError
from wishub_async.testing import FakeWishub


class Recorder:
    def __init__(self) -> None:
        self.ended: list[RequestEnded] = []
        self.retries: list[RetryScheduled] = []
        self.changes: list[KeyStateChanged] = []

    def hooks(self) -> Hooks:
        return Hooks(
            on_request_end=self.ended.append,
            on_retry=self.retries.append,
            on_key_state_change=self.changes.append,
        )


@pytest.mark.anyio
async def test_a_retried_call_reports_its_retries_and_its_end() -> None:
    seen = Recorder()
    fake = FakeWishub([K1])
    fake.fail(K1, retry_after="2", times=1)
    async with fake.client(app_keys={"a": K1}, hooks=seen.hooks()) as wh:
        await wh.models.list()
    assert seen.retries == [
        RetryScheduled("GET", "/models", "a", 1, "INVOKE_MODEL_ERROR", 2.0, moved=False)
    ]
    [end] = seen.ended
    assert (end.method, end.path, end.label, end.status_code, end.error, end.attempts) == (
        "GET",
        "/models",
        "a",
        200,
        None,
        2,
    )
    assert end.elapsed >= 0


@pytest.mark.anyio
async def test_a_failed_call_reports_its_error() -> None:
    seen = Recorder()
    fake = FakeWishub([K1])
    fake.fail(K1, times=5)
    async with fake.client(app_key=K1, hooks=seen.hooks(), retry=RetryPolicy(attempts=2)) as wh:
        with pytest.raises(ServerError):
            await wh.models.list()
    [end] = seen.ended
    assert (end.status_code, end.error, end.attempts) == (500, "INVOKE_MODEL_ERROR", 2)
    assert end.label == "…" + K1[-4:]


@pytest.mark.anyio
async def test_key_state_changes_are_reported_with_reasons() -> None:
    seen = Recorder()
    fake = FakeWishub([K1, K2])
    fake.fail(K2, type="rate_limit_exceeded", retry_after="5", times=1)
    async with fake.client(app_keys={"a": K1, "b": K2, "bad": WRONG}, hooks=seen.hooks()) as wh:
        await wh.fan_out(lambda view: view.models.list())
        fake.add_key(WRONG)
        await wh.check_keys()
    by_key = {(c.label, c.old, c.new, c.reason) for c in seen.changes}
    assert ("bad", KeyState.HEALTHY, KeyState.QUARANTINED, "INCORRECT_API_KEY_PROVIDED") in by_key
    assert ("b", KeyState.HEALTHY, KeyState.COOLING, "rate_limit_exceeded") in by_key
    assert ("bad", KeyState.QUARANTINED, KeyState.HEALTHY, None) in by_key
    assert all(c.redacted.startswith("…") for c in seen.changes)
    assert all(WRONG not in repr(c) and K2 not in repr(c) for c in seen.changes)


@pytest.mark.anyio
async def test_a_key_move_is_reported() -> None:
    seen = Recorder()
    fake = FakeWishub([K1])
    async with fake.client(app_keys={"bad": WRONG, "a": K1}, hooks=seen.hooks()) as wh:
        outcomes = await wh.map(lambda view, _: view.models.list(), [1])
    assert outcomes[0].ok
    assert outcomes[0].label == "a"
    # Equal load picks keys in the order given: "bad" first, then the call moves.
    [move] = seen.retries
    assert (move.label, move.moved, move.wait, move.error) == (
        "bad",
        True,
        0.0,
        "INCORRECT_API_KEY_PROVIDED",
    )


@pytest.mark.anyio
async def test_a_broken_hook_is_logged_and_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: RequestEnded) -> None:
        raise RuntimeError("exporter down")

    caplog.set_level(logging.ERROR, logger="wishub_async")
    fake = FakeWishub([K1])
    async with fake.client(app_key=K1, hooks=Hooks(on_request_end=broken)) as wh:
        assert len(await wh.models.list()) == 3
    assert "exporter down" in caplog.text
    assert K1 not in caplog.text


@pytest.mark.anyio
async def test_with_options_can_change_hooks() -> None:
    seen = Recorder()
    fake = FakeWishub([K1])
    async with fake.client(app_key=K1) as wh:
        await wh.models.list()
        await wh.with_options(hooks=seen.hooks()).models.list()
    assert len(seen.ended) == 1
