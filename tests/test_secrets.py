"""An AppKey never shows in repr, str, logs, exceptions or CLI output."""

from __future__ import annotations

import logging
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wishub_async import AsyncWishub, RetryPolicy
from wishub_async._keys import redact
from wishub_async.exceptions import ConfigurationError, WishubError
from wishub_async.testing import FakeWishub

VISIBLE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=64
)


def every_text(wh: AsyncWishub, errors: list[BaseException]) -> str:
    parts = [repr(wh), str(wh), repr(wh.key_status()), repr(wh._shared.ring.keys)]
    for error in errors:
        parts += [str(error), repr(error), repr(getattr(error, "__dict__", {}))]
    return "\n".join(parts)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["flat", "error", "html", "drop", "empty"])
async def test_no_key_in_any_output_at_debug_level(
    shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore
    good, bad = secrets.token_hex(16), secrets.token_hex(16)
    fake = FakeWishub([good])
    fake.fail(good, shape=shape, times=5)
    errors: list[BaseException] = []
    async with fake.client(app_keys={"team-a": good, "team-b": bad}) as wh:
        outcomes = await wh.fan_out(lambda view: view.models.list())
        errors = [o.error for o in outcomes if o.error is not None]
        text = every_text(wh, errors)
    assert len(errors) == 2
    assert "team-a" in text
    for secret in (good, bad):
        assert secret not in text
        assert secret not in caplog.text
    assert fake.count(good) == RetryPolicy().attempts


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=VISIBLE)
def test_random_keys_never_show(secret: str) -> None:
    wh = AsyncWishub(app_key=secret)
    status = wh.key_status()[0]
    assert status.redacted == redact(secret)
    assert status.label == redact(secret)
    assert len(status.redacted) <= 5
    text = repr(wh) + repr(status) + repr(wh._shared.ring.keys)
    assert secret not in text


HEX = st.text(alphabet="0123456789abcdef", min_size=8, max_size=24)
BAD = st.sampled_from([" ", "\n", "\r\nX-Injected: 1", "\t", "\x00", "\x7f", "é", "密"])


@settings(max_examples=60)
@given(head=HEX, bad=BAD, tail=HEX)
def test_bad_keys_are_refused_without_being_echoed(head: str, bad: str, tail: str) -> None:
    with pytest.raises(ConfigurationError, match="whitespace, control or non-ASCII") as caught:
        AsyncWishub(app_key=head + bad + tail)
    assert head not in str(caught.value)
    assert tail not in str(caught.value)


def test_short_keys_show_no_characters() -> None:
    assert redact("abcdefgh") == "…"
    assert redact("abcdefghijkl") == "…ijkl"


def test_the_key_travels_only_in_the_authorization_header() -> None:
    async def check() -> None:
        secret = secrets.token_hex(16)
        fake = FakeWishub([secret])
        async with fake.client(app_key=secret) as wh:
            await wh.models.list()
        request = fake.requests[0]
        assert request.key == secret
        assert secret not in repr(request)
        assert all(secret not in value for value in request.headers.values())
        assert secret not in request.path

    import anyio  # noqa: PLC0415

    anyio.run(check)


def test_wishub_error_is_the_root() -> None:
    assert issubclass(ConfigurationError, WishubError)
