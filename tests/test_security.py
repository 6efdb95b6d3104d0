"""Secrets and transport safety: keys stay secret, go only to the configured host, on TLS.

Complements ``test_secrets.py`` (redaction and the key checks) with property tests over
whole request paths, the CLI, server echoes, redirects, TLS and plain-http refusal.
"""

from __future__ import annotations

import json
import logging
import ssl
import traceback

import anyio
import httpx
import pytest
import trustme
from conftest import K1, K2, over_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wishub_async import AsyncWishub, RetryPolicy
from wishub_async._cli import DEMO_KEY, main
from wishub_async._client import DEFAULT_BASE_URL, Backend
from wishub_async.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
)
from wishub_async.testing import DEFAULT_MODELS, FakeWishub

KEYS = st.lists(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=20),
    min_size=2,
    max_size=2,
    unique=True,
).filter(lambda keys: DEMO_KEY not in keys)
"""Two distinct random AppKeys: any visible ASCII, quotes and backslashes included."""


def assert_secret_absent(secret: str, text: str) -> None:
    """Neither the key nor its hidden part shows, raw or escaped (repr, JSON)."""
    hidden = secret[:-4]  # all a redacted id (``…`` + the last 4) never shows
    for form in (secret, hidden, repr(secret)[1:-1], json.dumps(secret)[1:-1]):
        assert form not in text


def describe(errors: list[BaseException]) -> str:
    parts = []
    for error in errors:
        parts += [str(error), repr(error), repr(vars(error)), *traceback.format_exception(error)]
    return "\n".join(parts)


async def every_failure(good: str, bad: str) -> str:
    """Drive both keys through retries, key moves and errors; return all text produced."""
    fake = FakeWishub([good])
    fake.fail(good, type="rate_limit_exceeded", retry_after="1", message=f"slow, {good}")
    fake.fail(good, shape="drop")
    fake.fail(good, type="INVOKE_MODEL_ERROR", shape="flat", times=3)
    fake.fail(good, type="invalid_request_error", message=f"echo: Bearer {good}")
    async with fake.client(app_keys={"team-a": good, "team-b": bad}) as wh:
        outcomes = await wh.fan_out(lambda view: view.models.list())
        more = await wh.map(lambda view, _: view.models.list(), range(4))
        texts = [repr(wh), repr(wh.with_key("team-a")), repr(wh.key_status()), repr(fake)]
        texts += [repr(outcomes), repr(more), repr(fake.requests), repr(wh._shared.ring.keys)]
    errors: list[BaseException] = [o.error for o in [*outcomes, *more] if o.error is not None]
    assert errors  # the wrong key, the bad request and the exhausted retries all failed
    return "\n".join(texts) + describe(errors)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=KEYS)
def test_random_keys_never_show_anywhere(
    loop: str,
    keys: list[str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = keys
    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # every logger: ours, httpx, httpcore
        text = anyio.run(every_failure, good, bad, backend=loop)
        for argv in (["models", "--demo"], ["models", "--demo", "--json"]):
            assert main([*argv, f"--app-key={good}", f"--app-key={bad}"]) == 1
        printed = capsys.readouterr()
        assert main(["models", f"--app-key={good} "]) == 2  # malformed: refused unechoed
    outputs = [text, caplog.text, printed.out, printed.err, capsys.readouterr().err]
    everything = "\n".join(outputs)
    assert "team-a" in everything
    assert "…" + bad[-4:] in printed.out  # the CLI does show the redacted id
    for secret in keys:
        assert_secret_absent(secret, everything)
        for record in caplog.records:
            assert_secret_absent(secret, repr(record.args))


@pytest.mark.anyio
async def test_a_key_echoed_by_the_server_is_scrubbed(fake: FakeWishub) -> None:
    fake.fail(K1, type="INCORRECT_API_KEY_PROVIDED", shape="flat", message=f"AppKey {K1} 不正确")
    async with over_http(fake) as wh:
        with pytest.raises(AuthenticationError) as caught:
            await wh.models.list()
    error = caught.value
    assert error.message == f"AppKey …{K1[-4:]} 不正确"
    assert K1 not in repr(error.body)
    assert fake.count(K1) == 1


@pytest.mark.anyio
async def test_a_key_echoed_in_a_200_error_or_a_stream_is_scrubbed() -> None:
    fake = FakeWishub([K1])
    echo = f"Bearer {K1} may not call this model"
    fake.chat.fail_stream(after=2, type="INVOKE_MODEL_ERROR", message=echo)
    fake.fail(K1, status=200, body=json.dumps({"error": {"type": "X", "message": echo}}).encode())
    ask = [{"role": "user", "content": "hi"}]
    async with fake.client(app_key=K1, retry=RetryPolicy(attempts=1)) as wh:
        with pytest.raises(APIError) as in_a_200:
            await wh.embeddings.create(model=DEFAULT_MODELS[0], input="x")
        stream = await wh.chat.completions.create(
            model=DEFAULT_MODELS[0], messages=ask, stream=True
        )
        with pytest.raises(APIError) as in_a_stream:
            await stream.collect()
    for error in (in_a_200.value, in_a_stream.value):
        assert error.message == f"Bearer …{K1[-4:]} may not call this model"
        assert K1 not in repr(error.body) + str(error)


BAD_CHARACTERS = st.characters(
    blacklist_categories=["Cs"],  # lone surrogates cannot reach an env var or argv
    blacklist_characters=[chr(code) for code in range(0x21, 0x7F)],
)
HEX = st.text(alphabet="0123456789abcdef", min_size=10, max_size=20)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=HEX, bad=st.text(BAD_CHARACTERS, min_size=1, max_size=3), tail=HEX)
def test_keys_that_could_inject_are_refused_on_every_way_in(
    head: str,
    bad: str,
    tail: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = head + bad + tail
    ways_in = [
        {"app_keys": [K1, key]},
        {"app_keys": {"ok": K1, "injected": key}},
        {"app_key": "Bearer " + key},
    ]
    for kwargs in ways_in:
        with pytest.raises(ConfigurationError) as caught:
            AsyncWishub(**kwargs)  # type: ignore[arg-type]
        assert head not in str(caught.value)
        assert tail not in str(caught.value)
    if "\x00" not in key:  # an environment variable cannot hold a NUL
        monkeypatch.setenv("WISHUB_APP_KEY", key)
        with pytest.raises(ConfigurationError):
            AsyncWishub()
    assert main(["models", f"--app-key={key}", "--base-url=http://127.0.0.1:9/v1"]) == 2
    printed = capsys.readouterr()
    assert head not in printed.out + printed.err
    assert tail not in printed.out + printed.err


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_error_and_its_target_receives_nothing(
    fake: FakeWishub, status: int
) -> None:
    elsewhere = FakeWishub()
    async with elsewhere.serve() as target, over_http(fake) as wh:
        fake.fail(K1, status=status, body=b"", headers={"location": f"{target}/models"})
        with pytest.raises(APIError) as caught:
            await wh.models.list()
    assert type(caught.value) is APIError
    assert caught.value.status_code == status
    assert fake.count(K1) == 1
    assert elsewhere.count() == 0


@pytest.mark.anyio
async def test_a_callers_client_that_follows_redirects_drops_the_key(fake: FakeWishub) -> None:
    elsewhere = FakeWishub([K1])  # it would even accept the key, if it were sent
    async with (
        elsewhere.serve() as target,
        fake.serve() as base_url,
        httpx.AsyncClient(follow_redirects=True) as mine,
    ):
        fake.fail(K1, status=307, body=b"", headers={"location": f"{target}/models"})
        async with AsyncWishub(app_key=K1, base_url=base_url, http_client=mine) as wh:
            with pytest.raises(AuthenticationError):
                await wh.models.list()
    assert fake.count(K1) == 1
    assert [request.key for request in elsewhere.requests] == [None]
    assert "authorization" not in elsewhere.requests[0].headers


@pytest.mark.anyio
async def test_tls_verification_is_on_by_default(transport: Backend) -> None:
    """A server whose certificate no trusted authority signed is refused, on both backends."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    fake = FakeWishub([K1])
    async with fake.serve(tls=server_context) as base_url:
        assert base_url.startswith("https://127.0.0.1:")
        async with AsyncWishub(
            app_key=K1, base_url=base_url, backend=transport, retry=RetryPolicy(attempts=1)
        ) as wh:
            with pytest.raises(APIConnectionError, match=r"(?i)certificate"):
                await wh.models.list()
            assert not wh.is_closed  # the client stays usable
    assert fake.count() == 0  # the key never reached the untrusted server
    assert AsyncWishub(app_key=K1)._options.base_url == DEFAULT_BASE_URL
    assert DEFAULT_BASE_URL.startswith("https://")


NOT_LOOPBACK = [
    "http://wishub-x1.ctyun.cn/v1",
    "http://127.0.0.1.nip.io/v1",
    "http://localhost.example.com/v1",
    "http://2130706433/v1",
    "http://192.168.1.10:8080/v1",
    "HTTP://EXAMPLE.COM/v1",
]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1@example.com/v1", "https://user:secret@wishub.example/v1"]
)
def test_credentials_in_the_base_url_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AsyncWishub(app_key=K1, base_url=url, allow_http=True)
    assert "credentials" in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_plain_http_to_a_non_loopback_host_is_refused_every_way(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="allow_http"):
        AsyncWishub(app_key=K1, base_url=url)
    with pytest.raises(ConfigurationError, match="allow_http"):
        AsyncWishub(app_key=K1).with_options(base_url=url)
    monkeypatch.setenv("WISHUB_BASE_URL", url)
    with pytest.raises(ConfigurationError, match="allow_http"):
        AsyncWishub(app_key=K1)
    assert AsyncWishub(app_key=K1, allow_http=True)._options.base_url == url.rstrip("/")
    view = AsyncWishub(app_key=K2, base_url=DEFAULT_BASE_URL).with_options(
        base_url=url, allow_http=True
    )
    assert view._options.allow_http
