"""The public surface: names, __all__, typing marker."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import wishub_async
import wishub_async.exceptions
import wishub_async.models
import wishub_async.testing

EXPECTED = {
    "DEFAULT_ERROR_TABLE", "AsyncWishub", "ChatParams", "ChatStream", "ErrorRule",
    "ErrorTable", "Handler", "Hooks", "KeyEffect", "KeyPolicy", "KeyState",
    "KeyStateChanged", "KeyStatus", "Middleware", "Outcome", "OutcomeList", "OutcomeStream",
    "Request", "RequestEnded", "Response", "RetryPolicy", "RetryScheduled", "Timeout",
    *wishub_async.exceptions.__all__,
    # the platform's whole surface: hosts, rerank routes, vision content parts
    "HOSTS", "DEFAULT_RERANK_ROUTES", "RerankRoute", "RerankRoutes", "ContentPart",
    "ImagePart", "ImageURL", "TextPart", "UserMessage", "image_data_url", "image_part",
    "text_part", "user_message",
    # rate budgets
    "RateLimit", "BudgetStatus", "BudgetWaited", "published_limits",
}  # fmt: skip


def test_top_level_all_is_sorted_and_complete() -> None:
    # Sorted as ruff's RUF022 keeps it: constants first, then classes, each alphabetical.
    assert wishub_async.__all__ == sorted(wishub_async.__all__, key=lambda n: (not n.isupper(), n))
    assert set(wishub_async.__all__) == EXPECTED
    public = {name for name in vars(wishub_async) if not name.startswith("_")}
    submodules = {
        "annotations",
        "batch",
        "exceptions",
        "integrations",
        "models",
        "redis",
        "testing",
    }
    assert public - set(wishub_async.__all__) <= submodules


def test_every_exception_is_importable_from_the_top_level() -> None:
    for name in wishub_async.exceptions.__all__:
        assert getattr(wishub_async, name) is getattr(wishub_async.exceptions, name)


def test_design_names_are_importable() -> None:
    from wishub_async import AsyncWishub, RetryPolicy  # noqa: F401, PLC0415
    from wishub_async.exceptions import (  # noqa: F401, PLC0415
        APIError,
        AuthenticationError,
        RateLimitError,
        WishubError,
    )


def test_every_module_declares_all() -> None:
    for module in pkgutil.walk_packages(wishub_async.__path__, "wishub_async."):
        if module.name.endswith("__main__"):
            continue
        imported = importlib.import_module(module.name)
        assert isinstance(getattr(imported, "__all__", None), list), module.name
        for name in imported.__all__:
            assert hasattr(imported, name), f"{module.name}.{name}"


def test_public_modules_export_their_classes() -> None:
    exceptions = wishub_async.exceptions
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.WishubError)
    assert {"Model", "ModelList"} <= set(wishub_async.models.__all__)
    assert {"ChatCompletion", "ChatCompletionChunk", "EmbeddingList"} <= set(
        wishub_async.models.__all__
    )
    assert {"FakeWishub", "instant_waits"} <= set(wishub_async.testing.__all__)


def test_the_integrations_export_their_helpers() -> None:
    fastapi = importlib.import_module("wishub_async.integrations.fastapi")
    aiohttp = importlib.import_module("wishub_async.integrations.aiohttp")
    assert {"WishubDep", "attach_wishub", "get_wishub", "wishub_lifespan"} <= set(fastapi.__all__)
    assert {"WISHUB_CLIENT", "get_wishub", "wishub_cleanup_ctx"} <= set(aiohttp.__all__)
    otel = importlib.import_module("wishub_async.integrations.opentelemetry")
    assert otel.__all__ == ["tracing_middleware"]


def test_the_package_is_typed_and_versioned() -> None:
    assert (Path(wishub_async.__file__).parent / "py.typed").is_file()
    assert wishub_async.__version__.count(".") >= 2
