"""The one cattrs converter that turns response JSON into attrs classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from ._errors import excerpt
from .exceptions import ResponseValidationError

__all__ = ["make_converter", "parse_created", "structure_json"]

T = TypeVar("T")


def make_converter() -> cattrs.Converter:
    """Build the converter every response goes through.

    Decisions, each one deliberate:

    - Unknown keys are ignored, so new platform fields never break parsing.
    - ``null`` counts as absent for fields with a default (``owned_by: null`` -> "").
    - Strings, ints and floats are strict: ``None`` or a number is not a model id, and
      ``True`` is not an int.
    - ``created`` is lenient (``parse_created``): "" / null / missing -> None, int or
      numeric string -> Unix seconds (UTC), ISO-8601 -> that instant, else None.
    - Sequences must be JSON arrays (a string is not silently split into letters) and
      become tuples, so response objects are immutable all the way down.
    - Per-class hooks are generated once, on first use, and reused for every response.
    """
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_func(
        lambda t: t == (datetime | None), lambda value, _: parse_created(value)
    )
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook(converter))
    converter.register_structure_hook_factory(attrs.has, _attrs_hook(converter))
    return converter


def parse_created(value: Any) -> datetime | None:
    """Read a lenient ``created`` value; anything unreadable is None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_timestamp(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return _from_timestamp(float(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _from_timestamp(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _strict(kind: type[T]) -> Callable[[Any, Any], T]:
    def hook(value: Any, _: Any) -> T:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return hook


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int, got {type(value).__name__}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {type(value).__name__}")
    return float(value)


def _is_homogeneous_tuple(cls: Any) -> bool:
    args = get_args(cls)
    return get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis  # noqa: PLR2004


def _tuple_hook(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        item_type = get_args(cls)[0]
        item_hook = converter.get_structure_hook(item_type)

        def hook(value: Any, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise TypeError(f"expected array, got {type(value).__name__}")
            items, errors = [], []
            for index, item in enumerate(value):
                try:
                    items.append(item_hook(item, item_type))
                except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
                    exc.add_note(
                        cattrs.IterableValidationNote(f"@ index {index}", index, item_type)
                    )
                    errors.append(exc)
            if errors:
                raise cattrs.IterableValidationError(f"While structuring {cls!r}", errors, cls)
            return tuple(items)

        return hook

    return factory


def _attrs_hook(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        base = make_dict_structure_fn(cls, converter)
        defaulted = frozenset(a.name for a in attrs.fields(cls) if a.default is not attrs.NOTHING)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected object, got {type(value).__name__}")
            if None in value.values():
                value = {k: v for k, v in value.items() if v is not None or k not in defaulted}
            return base(value, cls)

        return hook

    return factory


_CONVERTER = make_converter()


def structure_json(content: bytes, cls: type[T]) -> T:
    """Decode a 2xx JSON body into ``cls``, or raise ``ResponseValidationError``."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        found = f"got: {excerpt(content)}" if content.strip() else "got an empty body"
        raise ResponseValidationError(
            f"expected a JSON body, {found}", body_excerpt=excerpt(content)
        ) from exc
    return structure(data, cls, content)


def structure(data: Any, cls: type[T], content: bytes = b"") -> T:
    """Structure decoded JSON into ``cls``, or raise ``ResponseValidationError``."""
    try:
        return _CONVERTER.structure(data, cls)
    except Exception as exc:
        problems = cattrs.transform_error(exc, path="$")
        first = problems[0] if problems else f"{type(exc).__name__}: {exc}"
        message, _, path = first.partition(" @ ")
        raise ResponseValidationError(
            f"response does not fit {cls.__name__}: {message}",
            path=path or "$",
            body_excerpt=excerpt(content),
        ) from exc
