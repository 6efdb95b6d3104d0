"""wishub_async.batch: run_batch, iter_batch, check_batch against the fake platform."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from batch_helpers import CHAT, EMBEDDINGS, finished_ids, request, results, write_requests
from conftest import K1, K2, WRONG, until
from fastapi import FastAPI

from wishub_async import Hooks, RateLimit, Request, RequestEnded, Response
from wishub_async._batchfiles import ResultsFile
from wishub_async.batch import (
    BatchResult,
    BatchStatus,
    BatchSummary,
    check_batch,
    iter_batch,
    run_batch,
)
from wishub_async.exceptions import (
    BatchFileError,
    ClientStateError,
    InvalidRequestError,
    ResponseValidationError,
)
from wishub_async.integrations.fastapi import WishubDep, wishub_lifespan
from wishub_async.testing import FakeWishub


@pytest.fixture
def shared() -> FakeWishub:
    """A fake whose two keys both see m-1 and the embedding model e-1."""
    return FakeWishub([K1, K2], models=["m-1", "e-1"])


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A requests file of two: ok-1 (answered) and bad-1 (no such model: fails)."""
    lines = [request("ok-1"), request("bad-1", model="no-such-model")]
    return write_requests(tmp_path / "in.jsonl", lines)


def texts(fake: FakeWishub) -> Counter[str]:
    """How often each request text reached the fake."""
    sent: Counter[str] = Counter()
    for logged in fake.requests:
        body = logged.json
        sent[body["messages"][-1]["content"] if "messages" in body else body["input"]] += 1
    return sent


# -- run_batch --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_batch_answers_every_request_once_over_all_keys(
    shared: FakeWishub, tmp_path: Path
) -> None:
    ids = [f"q-{n}" for n in range(60)]
    lines = [
        request(i, url=EMBEDDINGS, model="e-1") if n % 3 else request(i) for n, i in enumerate(ids)
    ]
    requests = write_requests(tmp_path / "requests.jsonl", lines)
    output = tmp_path / "results.jsonl"
    async with shared.client(app_keys=[K1, K2], max_concurrency=8) as wh:
        summary = await run_batch(wh, requests, output)
    assert sorted(finished_ids(output)) == sorted(ids)
    assert texts(shared) == Counter(ids)
    assert {r.key for r in shared.requests} == {K1, K2}
    assert summary.done == 60
    assert summary.failed == summary.deferred == summary.remaining == 0
    assert summary.complete
    assert summary.prompt_tokens > 0
    assert summary.completion_tokens > 0
    assert summary.rate > 0
    line = next(line for line in results(output) if line["custom_id"] == "q-0")
    assert list(line) == ["id", "custom_id", "response", "error"]
    assert line["id"].startswith("batch_req_")
    assert line["error"] is None
    assert line["response"]["status_code"] == 200
    assert line["response"]["body"]["object"] == "chat.completion"
    assert line["response"]["body"]["choices"][0]["message"]["content"] == "You said: q-0"


@pytest.mark.anyio
async def test_a_second_run_sends_nothing(shared: FakeWishub, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(10)])
    output = tmp_path / "out.jsonl"
    async with shared.client(app_key=K1) as wh:
        await run_batch(wh, requests, output)
        sent = len(shared.requests)
        again = await run_batch(wh, requests, output)
    assert len(shared.requests) == sent == 10
    assert again == BatchSummary(10, done_before=10, elapsed=again.elapsed)
    assert len(finished_ids(output)) == 10


@pytest.mark.anyio
async def test_failures_go_to_the_errors_file_with_type_code_and_message(
    shared: FakeWishub, tmp_path: Path, mixed: Path
) -> None:
    requests = mixed
    output, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    async with shared.client(app_key=K1) as wh:
        summary = await run_batch(wh, requests, output, errors)
    assert finished_ids(output) == ["ok-1"]
    [failure] = results(errors)
    assert failure["custom_id"] == "bad-1"
    assert failure["error"] == {
        "type": "model_not_found",
        "code": None,
        "message": "model 'no-such-model' not found",
        "class": "NotFoundError",
        "label": "…" + K1[-4:],
    }
    assert failure["response"]["status_code"] == 404
    assert failure["response"]["body"]["error"]["type"] == "model_not_found"
    assert (summary.done, summary.failed) == (1, 1)


@pytest.mark.anyio
async def test_without_an_errors_file_failures_go_to_the_output(
    shared: FakeWishub, tmp_path: Path, mixed: Path
) -> None:
    requests = mixed
    output = tmp_path / "out.jsonl"
    async with shared.client(app_key=K1) as wh:
        await run_batch(wh, requests, output)
        again = await run_batch(wh, requests, output)
    by_id = {line["custom_id"]: line for line in results(output)}
    assert by_id["ok-1"]["error"] is None
    assert by_id["bad-1"]["error"]["class"] == "NotFoundError"
    assert (again.done_before, again.failed_before, again.remaining) == (1, 1, 0)


@pytest.mark.anyio
async def test_no_key_reaches_the_files(tmp_path: Path) -> None:
    fake = FakeWishub([K1])
    fake.fail(
        type="invalid_request_error", message=f"the key {K1} is bad", headers={"x-request-id": K1}
    )
    requests = write_requests(
        tmp_path / "in.jsonl", [request("echo-1", model="4bd107bff85941239e27b1509eccfe98")]
    )
    output, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    async with fake.client(app_key=K1) as wh:
        await run_batch(wh, requests, output, errors)
    written = errors.read_text(encoding="utf-8")
    assert K1 not in written
    assert "…" + K1[-4:] in written
    [failure] = results(errors)
    assert failure["response"]["request_id"] == "…" + K1[-4:]


@pytest.mark.anyio
async def test_progress_is_reported_before_the_first_result_and_after_each(
    shared: FakeWishub, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(5)])
    seen: list[BatchSummary] = []
    async with shared.client(app_key=K1) as wh:
        summary = await run_batch(wh, requests, tmp_path / "out.jsonl", on_progress=seen.append)
    assert [s.done for s in seen] == [0, 1, 2, 3, 4, 5]
    assert seen[0].total == 5
    assert seen[-1].done == summary.done


@pytest.mark.anyio
async def test_every_line_synced_with_a_zero_interval(shared: FakeWishub, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(5)])
    async with shared.client(app_key=K1) as wh:
        summary = await run_batch(wh, requests, tmp_path / "out.jsonl", fsync_interval=0)
    assert summary.done == 5


# -- what is deferred, what fails -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        ({"type": "invalid_request_error"}, BatchStatus.FAILED, "BadRequestError"),
        ({"type": None, "status": 403}, BatchStatus.FAILED, "PermissionDeniedError"),
        ({"type": "INVOKE_MODEL_ERROR"}, BatchStatus.DEFERRED, "ServerError"),
        ({"type": "rate_limit_exceeded"}, BatchStatus.DEFERRED, "RateLimitError"),
        ({"type": "insufficient_quota"}, BatchStatus.DEFERRED, "QuotaExceededError"),
        ({"shape": "drop"}, BatchStatus.DEFERRED, "APIConnectionError"),
        (
            {"type": None, "status": 200, "body": b"<html>ok</html>"},
            BatchStatus.FAILED,
            "ResponseValidationError",
        ),
    ],
    ids=["400", "403", "500", "429", "quota", "drop", "not-json"],
)
async def test_what_is_deferred_and_what_fails(
    tmp_path: Path, failure: dict[str, Any], status: BatchStatus, error: str
) -> None:
    fake = FakeWishub([K1], models=["m-1"])
    fake.fail(times=10, **failure)
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    async with fake.client(app_key=K1) as wh, iter_batch(wh, requests) as batch:
        [result] = [result async for result in batch]
    assert result.status is status
    assert type(result.error).__name__ == error
    assert not result.ok


@pytest.mark.anyio
async def test_deferred_requests_are_not_written_and_the_next_run_sends_them(
    tmp_path: Path,
) -> None:
    fake = FakeWishub([K1], models=["m-1"])
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    output = tmp_path / "out.jsonl"
    async with fake.client(app_key=K1) as wh:
        fake.fail(type="INVOKE_MODEL_ERROR", times=3)
        first = await run_batch(wh, requests, output)
        assert (first.deferred, first.remaining, output.read_bytes()) == (1, 1, b"")
        second = await run_batch(wh, requests, output)
    assert (second.done, second.remaining) == (1, 0)
    assert finished_ids(output) == ["q"]


@pytest.mark.anyio
async def test_a_run_stops_when_every_key_is_rejected(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"])
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(200)])
    output = tmp_path / "out.jsonl"
    wrong = ["e" * 32, WRONG]
    async with fake.client(app_keys=wrong, max_concurrency=4) as wh:
        summary = await run_batch(wh, requests, output)
    assert summary.stopped is not None
    assert "every AppKey was rejected" in summary.stopped
    assert summary.done == summary.failed == 0
    assert summary.remaining == 200
    assert summary.deferred < 200
    assert output.read_bytes() == b""


@pytest.mark.anyio
async def test_a_bug_in_a_middleware_stops_the_run(shared: FakeWishub, tmp_path: Path) -> None:
    async def broken(request: Request, call_next: Any) -> Response:
        raise RuntimeError("oops")

    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(3)])
    async with shared.client(app_key=K1, middleware=[broken]) as wh:
        with pytest.raises(RuntimeError, match="oops"):
            await run_batch(wh, requests, tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == b""


@pytest.mark.anyio
async def test_closing_the_client_during_a_run_raises(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"], latency=0.05)
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(50)])
    output = tmp_path / "out.jsonl"
    async with fake.client(app_key=K1, max_concurrency=2) as wh, anyio.create_task_group() as group:

        def close_at_three(summary: BatchSummary) -> None:
            if summary.done == 3:
                group.start_soon(wh.aclose)

        with pytest.raises(ClientStateError):
            await run_batch(wh, requests, output, on_progress=close_at_three)
    assert 3 <= len(finished_ids(output)) < 50


# -- resuming: torn lines, cancellation -------------------------------------------------


@pytest.mark.anyio
async def test_a_torn_last_line_is_cut_off_and_its_request_sent_again(
    shared: FakeWishub, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(i) for i in ("a", "b", "c")])
    output = tmp_path / "out.jsonl"
    async with shared.client(app_key=K1) as wh:
        async with iter_batch(wh, requests) as batch:
            first = next(iter([r async for r in batch if r.custom_id == "a"]))
        shared.requests.clear()
        whole = json.dumps(first.to_dict(), separators=(",", ":")).encode() + b"\n"
        output.write_bytes(whole + b'{"id":"batch_req_0","custom_id":"b","response":{"sta')
        summary = await run_batch(wh, requests, output)
    assert sorted(texts(shared)) == ["b", "c"]
    assert sorted(finished_ids(output)) == ["a", "b", "c"]
    assert output.read_bytes().startswith(whole)
    assert (summary.done_before, summary.done) == (1, 2)


@pytest.mark.anyio
async def test_a_file_of_only_a_torn_line_is_emptied(shared: FakeWishub, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request("a")])
    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"id":"batch_req_0","cus')
    plan = await check_batch(requests, output)
    assert (plan.torn, plan.pending) == (24, 1)
    async with shared.client(app_key=K1) as wh:
        await run_batch(wh, requests, output)
    assert finished_ids(output) == ["a"]


@pytest.mark.anyio
async def test_a_cancelled_run_leaves_whole_lines_and_resumes_exactly_once(
    tmp_path: Path,
) -> None:
    fake = FakeWishub([K1], models=["m-1"], latency=0.01)
    ids = [f"q-{n}" for n in range(40)]
    requests = write_requests(tmp_path / "in.jsonl", [request(i) for i in ids])
    output = tmp_path / "out.jsonl"
    async with fake.client(app_key=K1, max_concurrency=4) as wh:
        with anyio.CancelScope() as scope:

            def cancel_at_ten(summary: BatchSummary) -> None:
                if summary.done >= 10:
                    scope.cancel()

            await run_batch(wh, requests, output, on_progress=cancel_at_ten)
        written = finished_ids(output)
        assert 10 <= len(written) < 40
        sent_before = texts(fake)
        await run_batch(wh, requests, output)
    assert sorted(finished_ids(output)) == sorted(ids)
    again = texts(fake) - sent_before
    assert not set(again) & set(written)  # finished work is never sent again
    resent = sum(count for text, count in texts(fake).items() if count > 1)
    assert resent <= 2 * 4  # at most the calls in flight when it stopped, sent twice


@pytest.mark.anyio
async def test_a_second_run_on_the_same_files_is_refused(
    shared: FakeWishub, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request("a")])
    output = tmp_path / "out.jsonl"
    holder = ResultsFile(str(output))
    try:
        async with shared.client(app_key=K1) as wh:
            with pytest.raises(BatchFileError, match="another batch run is writing it"):
                await run_batch(wh, requests, output)
    finally:
        holder.close()
    assert not shared.requests


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("output", "errors"),
    [("in.jsonl", None), ("out.jsonl", "out.jsonl"), ("out.jsonl", "in.jsonl")],
)
async def test_each_file_needs_its_own_path(
    shared: FakeWishub, tmp_path: Path, output: str, errors: str | None
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request("a")])
    async with shared.client(app_key=K1) as wh:
        with pytest.raises(BatchFileError, match="give each its own"):
            await run_batch(
                wh, requests, tmp_path / output, None if errors is None else tmp_path / errors
            )
    assert not shared.requests


# -- checking the input ------------------------------------------------------------------

GOOD = request("good")


NO_METHOD = {name: value for name, value in GOOD.items() if name != "method"}
STREAMED = {**GOOD["body"], "stream": True}
KNOWN_URLS = "(known: /v1/chat/completions, /v1/embeddings, /v1/rerank, /v1/reranks)"
BAD_LINES = [
    pytest.param(
        '{"custom_id": "x", ',
        "not valid JSON: Expecting property name enclosed in double quotes"
        " (at the end of the line)",
        id="json-cut",
    ),
    pytest.param('{"custom_id": x}', "not valid JSON: Expecting value (column 15)", id="json"),
    pytest.param("[1, 2]", "not a JSON object", id="not-object"),
    pytest.param(b'{"custom_id": "\xff"}', "not UTF-8 text", id="utf8"),
    pytest.param({**GOOD, "custom_id": None}, "no custom_id", id="no-id"),
    pytest.param({**GOOD, "custom_id": 7}, "custom_id must be a non-empty string", id="id-type"),
    pytest.param({**GOOD, "custom_id": ""}, "custom_id must be a non-empty string", id="empty-id"),
    pytest.param(
        {**GOOD, "custom_id": "good"}, "duplicate custom_id 'good' (first on line 1)", id="twice"
    ),
    pytest.param(
        {**GOOD, "custom_id": "x", "url": "/v1/completions"},
        f"unknown url '/v1/completions' {KNOWN_URLS}",
        id="url",
    ),
    pytest.param(
        {**GOOD, "custom_id": "x", "method": "GET"},
        "method 'GET' is not allowed for /v1/chat/completions (use POST)",
        id="method",
    ),
    pytest.param({**NO_METHOD, "custom_id": "x"}, "no method", id="no-method"),
    pytest.param({**GOOD, "custom_id": "x", "url": 5}, "url must be a string", id="url-type"),
    pytest.param({**GOOD, "custom_id": "x", "body": "hi"}, "body must be a JSON object", id="body"),
    pytest.param(
        {**GOOD, "custom_id": "x", "body": {"messages": []}},
        "body.model must name the model (a non-empty string)",
        id="model",
    ),
    pytest.param(
        {**GOOD, "custom_id": "x", "body": STREAMED},
        "body.stream is not supported in a batch; remove it",
        id="stream",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
async def test_a_bad_line_is_named_and_nothing_is_sent(
    shared: FakeWishub, tmp_path: Path, line: dict[str, Any] | str | bytes, reason: str
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [GOOD, "", line, request("later")])
    output = tmp_path / "out.jsonl"
    async with shared.client(app_key=K1) as wh:
        with pytest.raises(BatchFileError) as caught:
            await run_batch(wh, requests, output)
    assert (caught.value.path, caught.value.line, caught.value.reason) == (str(requests), 3, reason)
    assert str(caught.value) == f"{requests}, line 3: {reason}"
    assert not shared.requests
    assert not output.exists()  # a run that sends nothing leaves nothing behind


@pytest.mark.anyio
async def test_every_problem_is_counted_and_the_first_ones_listed(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | str] = [request("a"), *(["{"] * 30), request("a")]
    lines += [request("b"), request("b")]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    with pytest.raises(BatchFileError) as caught:
        await check_batch(requests)
    error = caught.value
    assert error.count == 32
    assert len(error.problems) == 20
    assert str(error).endswith("(and 31 more problems)")
    assert error.problems[0][0] == 2


@pytest.mark.anyio
async def test_duplicates_name_their_first_line(tmp_path: Path) -> None:
    lines = [request("a"), request("b"), request("a"), request("b"), request("a")]
    with pytest.raises(BatchFileError) as caught:
        await check_batch(write_requests(tmp_path / "in.jsonl", lines))
    assert caught.value.problems == (
        (3, "duplicate custom_id 'a' (first on line 1)"),
        (4, "duplicate custom_id 'b' (first on line 2)"),
        (5, "duplicate custom_id 'a' (first on line 1)"),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "holds no request"), (b"\n  \n", "holds no request")]
)
async def test_an_empty_file_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(content)
    with pytest.raises(BatchFileError, match=reason):
        await check_batch(requests)


@pytest.mark.anyio
async def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BatchFileError, match="cannot read it: No such file"):
        await check_batch(tmp_path / "nowhere.jsonl")


@pytest.mark.anyio
async def test_a_results_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request("a")])
    other = tmp_path / "other.jsonl"
    other.write_bytes(requests.read_bytes())  # the requests again, given as the output
    with pytest.raises(BatchFileError, match="line 1: not a batch result line") as caught:
        await check_batch(requests, other)
    assert caught.value.path == str(other)


@pytest.mark.anyio
async def test_check_batch_counts_what_is_left(shared: FakeWishub, tmp_path: Path) -> None:
    lines = [request("a"), request("b", model="nope"), request("c", url=EMBEDDINGS, model="e-1")]
    lines += [request("d"), request("e")]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    output, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    async with shared.client(app_key=K1) as wh, iter_batch(wh, requests, done={"d", "e"}) as batch:
        async for result in batch:
            target = output if result.ok else errors
            with target.open("a", encoding="utf-8") as file:
                file.write(json.dumps(result.to_dict()) + "\n")
    plan = await check_batch(requests, output, errors)
    assert (plan.total, plan.done, plan.failed, plan.pending) == (5, 2, 1, 2)
    assert plan.urls == {CHAT: 2}
    assert plan.models == {"m-1": 2}
    assert plan.torn == 0


# -- iter_batch, wh.request ---------------------------------------------------------------


@pytest.mark.anyio
async def test_iter_batch_skips_what_is_done_and_reports_usage(
    shared: FakeWishub, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(6)])
    got: list[BatchResult] = []
    async with (
        shared.client(app_key=K1) as wh,
        iter_batch(wh, requests, done={"q-0", "q-5"}) as batch,
    ):
        got = [result async for result in batch]
    assert sorted(r.custom_id for r in got) == ["q-1", "q-2", "q-3", "q-4"]
    assert all(r.ok and r.attempts == 1 and r.label == "…" + K1[-4:] for r in got)
    assert all(r.prompt_tokens == 1 and r.completion_tokens == 3 for r in got)
    assert {r.line for r in got} == {2, 3, 4, 5}


@pytest.mark.anyio
async def test_leaving_iter_batch_early_cancels_the_rest(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"], latency=0.01)
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(500)])
    async with fake.client(app_key=K1, max_concurrency=4) as wh:
        async with iter_batch(wh, requests) as batch:
            async for _ in batch:
                break
        assert len(fake.requests) < 20
        await until(lambda: all(s.in_flight == 0 for s in wh.key_status()))


@pytest.mark.anyio
async def test_a_retried_request_counts_its_attempts(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"])
    fake.fail(type="INVOKE_MODEL_ERROR")
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    async with fake.client(app_key=K1) as wh:
        summary = await run_batch(wh, requests, tmp_path / "out.jsonl")
    assert (summary.done, summary.retried) == (1, 1)


@pytest.mark.anyio
async def test_request_sends_a_raw_body_with_its_model(shared: FakeWishub) -> None:
    ended: list[RequestEnded] = []
    async with shared.client(app_key=K1, hooks=Hooks(on_request_end=ended.append)) as wh:
        body = {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]}
        response = await wh.request("POST", "/chat/completions", json=body)
        await wh.request("POST", "/embeddings", json={"model": "e-1", "input": "x"}, model="other")
        listed = await wh.request("GET", "/models")
    assert json.loads(response.content)["choices"][0]["message"]["content"] == "You said: hi"
    assert [event.model for event in ended] == ["m-1", "other", None]
    assert json.loads(listed.content)["object"] == "list"
    with pytest.raises(InvalidRequestError, match="path must start with '/'"):
        await wh.request("GET", "models")


def test_results_are_plain_data() -> None:
    error = ResponseValidationError("the answer is not JSON")
    result = BatchResult("q", 3, BatchStatus.FAILED, error=error, attempts=2)
    assert result.to_dict()["error"] == {
        "type": None,
        "code": None,
        "message": "the answer is not JSON",
        "class": "ResponseValidationError",
        "label": None,
    }
    assert result.to_dict()["response"] is None
    assert BatchSummary(3).to_dict()["remaining"] == 3
    assert BatchSummary(3).rate == 0.0


# -- inside an app -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_fastapi_app_runs_a_batch_while_serving(shared: FakeWishub, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(30)])
    app = FastAPI(lifespan=wishub_lifespan(lambda: shared.client(app_keys=[K1, K2])))

    @app.post("/batches/{name}")
    async def start(name: str, wh: WishubDep) -> dict[str, Any]:
        summary = await run_batch(wh, requests, tmp_path / f"{name}.jsonl")
        return summary.to_dict()

    @app.get("/models")
    async def models(wh: WishubDep) -> list[str]:
        return (await wh.models.list()).ids

    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport) as http:
        async with anyio.create_task_group() as group:
            replies: dict[str, Any] = {}

            async def post(name: str) -> None:
                replies[name] = (await http.post(f"http://app/batches/{name}")).json()

            group.start_soon(post, "first")
            assert (await http.get("http://app/models")).json() == ["m-1", "e-1"]
        second = (await http.post("http://app/batches/first")).json()
    assert replies["first"]["done"] == 30
    assert (second["done"], second["done_before"]) == (0, 30)


async def _drain(batch: AsyncIterator[BatchResult]) -> list[BatchResult]:
    return [result async for result in batch]


@pytest.mark.anyio
async def test_a_view_pinned_to_a_key_sends_on_it_only(shared: FakeWishub, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(8)])
    async with (
        shared.client(app_keys={"a": K1, "b": K2}) as wh,
        iter_batch(wh.with_key("b"), requests) as batch,
    ):
        got = await _drain(batch)
    assert {result.label for result in got} == {"b"}
    assert {logged.key for logged in shared.requests} == {K2}


@pytest.mark.anyio
async def test_a_slow_reader_holds_the_sending_back(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"])
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(100)])
    async with (
        fake.client(app_key=K1) as wh,
        iter_batch(wh, requests, concurrency=3) as batch,
    ):
        await anext(batch)
        for _ in range(50):
            await anyio.lowlevel.checkpoint()  # the senders may run as far as they can
        assert len(fake.requests) <= 1 + 3  # the one handed out, three more out at most
        rest = [result async for result in batch]
    assert len(rest) == 99


@pytest.mark.anyio
async def test_run_batch_keeps_to_its_concurrency(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["m-1"], latency=0.001)
    requests = write_requests(tmp_path / "in.jsonl", [request(f"q-{n}") for n in range(40)])
    async with fake.client(app_key=K1, max_concurrency=20) as wh:
        summary = await run_batch(wh, requests, tmp_path / "out.jsonl", concurrency=2)
    assert summary.done == 40
    assert fake.peak_in_flight_total <= 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("fsync_interval", -1),
        ("fsync_interval", float("inf")),
        ("fsync_interval", "1"),
        ("concurrency", 0),
        ("concurrency", True),
        ("concurrency", 1.5),
    ],
)
async def test_a_bad_option_is_refused_before_anything_happens(
    shared: FakeWishub, tmp_path: Path, option: str, value: Any
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [request("q")])
    async with shared.client(app_key=K1) as wh:
        with pytest.raises(InvalidRequestError, match=option):
            await run_batch(wh, requests, tmp_path / "out.jsonl", **{option: value})
        if option == "concurrency":
            with pytest.raises(InvalidRequestError, match=option):
                async with iter_batch(wh, requests, concurrency=value):
                    pass
    assert not shared.requests
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.anyio
@pytest.mark.real_waits
async def test_a_batch_keeps_within_rate_budgets(shared: FakeWishub, tmp_path: Path) -> None:
    enforced = shared.limit(requests=4, per=0.3, style="sliding")
    lines = [request(f"q-{n}") for n in range(30)]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    limits = RateLimit(requests=4, per=0.3)
    async with shared.client(app_keys=[K1, K2], limits=limits) as wh:
        summary = await run_batch(wh, requests, output)
    assert summary.done == 30
    assert enforced.rejected == 0
    assert sorted(finished_ids(output)) == sorted(f"q-{n}" for n in range(30))


@pytest.mark.anyio
async def test_rerank_lines_go_to_their_routes(tmp_path: Path) -> None:
    fake = FakeWishub([K1], models=["BGE-Reranker-V2-m3", "qwen3-rerank"])
    body = {"query": "pandas", "documents": ["bamboo", "stocks"]}
    lines = [
        {"custom_id": "r-1", "method": "POST", "url": "/v1/rerank",
         "body": {"model": "BGE-Reranker-V2-m3", **body}},
        {"custom_id": "r-2", "method": "POST", "url": "/v1/reranks",
         "body": {"model": "qwen3-rerank", **body}},
    ]  # fmt: skip
    requests = write_requests(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    async with fake.client(app_key=K1) as wh:
        summary = await run_batch(wh, requests, output)
    assert summary.done == 2
    assert sorted(r.path for r in fake.requests) == ["/v1/rerank", "/v1/reranks"]
    answers = {line["custom_id"]: line["response"]["body"] for line in results(output)}
    assert answers["r-1"]["results"][0]["index"] in {0, 1}
