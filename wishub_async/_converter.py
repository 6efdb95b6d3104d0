"""The one cattrs converter that turns response JSON into attrs classes."""

from __future__ import annotations

import array
import base64
import binascii
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from ._json import loads
from ._text import excerpt
from .exceptions import ResponseValidationError
from .models import Embedding

__all__ = [
    "decode_json",
    "decode_vector",
    "make_converter",
    "parse_created",
    "structure",
    "structure_json",
]

T = TypeVar("T")

_ALIASES: dict[type, tuple[tuple[str, str], ...]] = {
    Embedding: (("embeddings", "embedding"),),
}
"""Per class, (platform name, field name) pairs: the platform's name is read when the
field's own name is missing or null."""


def make_converter(*, detailed: bool = True) -> cattrs.Converter:
    """Build the converter every response goes through.

    Two are built: a fast one without detailed validation for the hot path, and a
    detailed one that runs only when the fast one fails, so an error still names the
    path of the bad field (``$.data[1].id``). Both accept and refuse the same bodies.

    Decisions, each one deliberate:

    - Unknown keys are ignored, so new platform fields never break parsing.
    - ``null`` counts as absent for fields with a default (``owned_by: null`` -> "").
    - Strings, ints and floats are strict: ``None`` or a number is not a model id, and
      ``True`` is not an int.
    - ``created`` is lenient (``parse_created``): "" / null / missing -> None, int or
      numeric string -> Unix seconds (UTC; milliseconds when 1e11 or more), ISO-8601
      -> that instant, else None.
    - Renames (``_ALIASES``): an embedding's vector is read from the platform's
      ``embeddings`` (plural) when OpenAI's ``embedding`` is missing or null.
    - A vector (``tuple[float, ...]``) is a JSON array of numbers, or a base64 string of
      little-endian float32 values (``encoding_format="base64"``), decoded here.
    - Sequences must be JSON arrays (a string is not silently split into letters) and
      become tuples, so response objects are immutable all the way down.
    - Per-class hooks are generated once, on first use, and reused for every response.
    """
    converter = cattrs.Converter(detailed_validation=detailed)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_func(lambda t: t == (datetime | None), _created_hook)
    converter.register_structure_hook_factory(
        _is_homogeneous_tuple, _tuple_hook(converter, detailed=detailed)
    )
    converter.register_structure_hook_func(
        lambda t: t == tuple[float, ...], lambda value, _: decode_vector(value)
    )
    converter.register_structure_hook_factory(attrs.has, _attrs_hook(converter, detailed=detailed))
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


def _created_hook(value: object, _: object) -> datetime | None:
    if value == "":  # the platform's default
        return None
    if type(value) is not int:
        return parse_created(value)
    # A model list repeats the same timestamps on every call: each is read once.
    created = _CREATED.get(value, _MISSING)
    if created is _MISSING:
        if len(_CREATED) >= _CREATED_KEPT:
            _CREATED.clear()
        created = _CREATED[value] = parse_created(value)
    return created  # type: ignore[return-value]  # a datetime or None, never _MISSING


_CREATED: dict[int, datetime | None] = {}
"""Integer ``created`` values already read (datetimes are immutable: shared safely)."""
_CREATED_KEPT = 4096


_MILLISECONDS_FROM = 1e11
"""Unix seconds reach 1e11 only in the year 5138: larger values are milliseconds."""


def _from_timestamp(seconds: float) -> datetime | None:
    if abs(seconds) >= _MILLISECONDS_FROM:  # a JavaScript-style timestamp in ms
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def decode_vector(value: object) -> tuple[float, ...]:
    """A vector from a JSON array of numbers or base64 little-endian float32."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"vector is not base64: {exc}") from None
        if len(raw) % 4:
            raise ValueError(f"base64 vector has {len(raw)} bytes, not a multiple of 4")
        floats = array.array("f", raw)
        if sys.byteorder == "big":  # pragma: no cover - the platforms we test on are little
            floats.byteswap()
        return tuple(floats)
    if not isinstance(value, list):
        raise TypeError(f"expected array of numbers or base64 string, got {type(value).__name__}")
    if all(type(item) is float for item in value):
        return tuple(value)
    return tuple(_strict_float(item, None) for item in value)


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


def _tuple_hook(
    converter: cattrs.Converter, *, detailed: bool
) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        item_type = get_args(cls)[0]
        item_hook = converter.get_structure_hook(item_type)

        def fast(value: Any, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise TypeError(f"expected array, got {type(value).__name__}")
            return tuple([item_hook(item, item_type) for item in value])

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

        return hook if detailed else fast

    return factory


def _attrs_hook(
    converter: cattrs.Converter, *, detailed: bool
) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        if not detailed:
            fast = _generated_hook(cls, converter)
            if fast is not None:
                return fast
        base = make_dict_structure_fn(cls, converter)
        defaulted = frozenset(a.name for a in attrs.fields(cls) if a.default is not attrs.NOTHING)
        aliases = _ALIASES.get(cls, ())

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected object, got {type(value).__name__}")
            for alias, name in aliases:
                if value.get(name) is None and alias in value:
                    value = {**value, name: value[alias]}
            if None in value.values():
                value = {k: v for k, v in value.items() if v is not None or k not in defaulted}
            return base(value, cls)

        return hook

    return factory


_INLINE = (str, bool)
"""Types whose strict check (``type(v) is T``) the generated hooks inline."""


def _generated_hook(cls: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any] | None:
    """A straight-line structure function for ``cls``, for the fast converter.

    It accepts and refuses what the detailed path does (the same rules: unknown keys
    ignored, null as absent for defaulted fields, aliases, strict primitives), in one
    function per class with the primitive checks inlined, about twice as fast as
    cattrs' generated function behind a wrapper. None for a class it does not handle
    (a field outside ``__init__``, a default computed from the instance): cattrs'
    own function serves those.
    """
    fields = attrs.fields(attrs.resolve_types(cls))
    if any(not f.init or getattr(f.default, "takes_self", False) for f in fields):
        return None
    aliases = {name: alias for alias, name in _ALIASES.get(cls, ())}
    scope: dict[str, Any] = {"cls": cls, "missing": _MISSING}
    lines = ["def structure(o, _):", "    if type(o) is not dict:", "        raise TypeError(o)"]
    arguments: list[str] = []
    by_name = False
    for index, field in enumerate(fields):
        value = f"v{index}"
        lines.append(f"    {value} = o.get({field.name!r}, missing)")
        if field.name in aliases:
            lines.append(f"    if {value} is None or {value} is missing:")
            lines.append(f"        {value} = o.get({aliases[field.name]!r}, missing)")
        check = "    "
        if field.default is attrs.NOTHING:
            lines.append(f"    if {value} is missing:")
            lines.append(f"        raise KeyError({field.name!r})")
        else:
            factory = getattr(field.default, "factory", None)  # an attrs.Factory
            if factory is not None:
                scope[f"f{index}"] = factory
                default = f"f{index}()"
            else:
                scope[f"d{index}"] = field.default
                default = f"d{index}"
            lines.append(f"    if {value} is None or {value} is missing:")
            lines.append(f"        {value} = {default}")
            lines.append("    else:")
            check = "        "
        if field.type in _INLINE:
            scope[f"t{index}"] = field.type
            lines.append(f"{check}if type({value}) is not t{index}:")
            lines.append(f"{check}    raise TypeError({value})")
        else:
            scope[f"h{index}"] = converter.get_structure_hook(field.type)
            scope[f"t{index}"] = field.type
            lines.append(f"{check}{value} = h{index}({value}, t{index})")
        by_name = by_name or field.kw_only  # positional until the first keyword-only field
        arguments.append(f"{field.alias}={value}" if by_name else value)
    lines.append(f"    return cls({', '.join(arguments)})")
    exec("\n".join(lines), scope)  # noqa: S102 - our own code, built from the class's fields
    return scope["structure"]  # type: ignore[no-any-return]  # the function just built


_MISSING = object()
"""A key absent from the JSON object (None means the platform sent null)."""


_FAST = make_converter(detailed=False)
_DETAILED = make_converter()
_HOOKS: dict[Any, Callable[[Any, Any], Any]] = {}
"""Each class's fast structure hook, looked up once instead of dispatched per response."""


def structure_json(content: bytes, cls: type[T]) -> T:
    """Decode a 2xx JSON body into ``cls``, or raise ``ResponseValidationError``."""
    return structure(decode_json(content), cls, content)


def decode_json(content: bytes) -> Any:
    """Decode a 2xx JSON body, or raise ``ResponseValidationError``."""
    try:
        return loads(content)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        found = f"got: {excerpt(content)}" if content.strip() else "got an empty body"
        raise ResponseValidationError(
            f"expected a JSON body, {found}", body_excerpt=excerpt(content)
        ) from exc


def structure(data: Any, cls: type[T], content: bytes = b"") -> T:
    """Structure decoded JSON into ``cls``, or raise ``ResponseValidationError``.

    The fast hook runs first; only when it fails does the detailed one run again, to
    say where the problem is.
    """
    hook = _HOOKS.get(cls)
    if hook is None:
        hook = _HOOKS[cls] = _FAST.get_structure_hook(cls)
    try:
        return hook(data, cls)  # type: ignore[no-any-return]  # the hook built for cls
    except Exception:  # noqa: BLE001, S110 - the detailed pass below names the problem
        pass
    try:
        return _DETAILED.structure(data, cls)
    except Exception as exc:
        problems = cattrs.transform_error(exc, path="$")
        first = problems[0] if problems else f"{type(exc).__name__}: {exc}"
        message, _, path = first.partition(" @ ")
        raise ResponseValidationError(
            f"response does not fit {cls.__name__}: {message}",
            path=path or "$",
            body_excerpt=excerpt(content),
        ) from exc
