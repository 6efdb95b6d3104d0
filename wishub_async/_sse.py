"""A tolerant incremental parser for server-sent events (the chat stream's framing).

``SSEDecoder.feed`` takes bytes as they arrive, split anywhere (inside a line, a CRLF
pair or a multi-byte UTF-8 character), and returns the payloads of the events that
are complete. ``decode_payload`` turns one payload into JSON values.

Tolerances, each one deliberate:

- ``data:`` with or without the space after the colon (the platform sends none).
- Lines end with LF, CRLF or CR; a leading UTF-8 BOM is dropped.
- Comment lines (``:ping``), blank lines, ``event:``, ``id:``, ``retry:`` and unknown
  fields are skipped; only ``data`` carries content.
- A bare JSON line (``{...}`` or ``[DONE]`` without ``data:``) is an event by itself.
- An event still open when the body ends counts (servers that omit the last blank line).
- Bytes that are not UTF-8 become U+FFFD rather than failing the whole stream.
- One payload may hold several JSON values (``data:`` lines not separated by a blank
  line): ``decode_payload`` returns them all. Anything else that is not JSON raises
  ``ResponseValidationError``; nothing here raises another exception type.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ._json import loads
from ._text import excerpt
from .exceptions import ResponseValidationError

__all__ = ["DONE", "MAX_EVENT_BYTES", "SSEDecoder", "decode_payload"]

DONE: Final = "[DONE]"
"""The payload that ends an OpenAI-style stream (optional on this platform)."""

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
"""A line or event larger than this is refused rather than buffered without end."""

_BOM = "\ufeff"
_JSON = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class SSEDecoder:
    """Incremental SSE parser: feed it bytes, get back complete event payloads."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._size = 0
        self._skip_lf = False
        self._started = False
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the payloads of the events they completed, in order.

        Raises:
            ResponseValidationError: a line or event is larger than the limit.
        """
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer
        buffer += chunk
        if b"\r" not in buffer and b"\n" not in buffer:
            self._check_size(len(buffer))
            return []
        events: list[str] = []
        lines = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._skip_lf = buffer.endswith(b"\r")
        self._buffer = bytearray(lines.pop())
        self._check_size(len(self._buffer))
        for line in lines:
            self._line(line.decode("utf-8", "replace"), events)
        return events

    def close(self) -> list[str]:
        """The body ended: return the payload of an event left open, if any."""
        events: list[str] = []
        if self._buffer:
            self._line(self._buffer.decode("utf-8", "replace"), events)
            self._buffer.clear()
        self._dispatch(events)
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not self._started:
            self._started = True
            line = line.removeprefix(_BOM)
        if not line:
            self._dispatch(events)
            return
        first = line[0]
        if first == ":":
            return
        if first in "{[":
            self._dispatch(events)
            events.append(line)
            return
        name, colon, value = line.partition(":")
        if name != "data":
            return
        if colon and value[:1] == " ":
            value = value[1:]
        self._size += len(value)
        self._check_size(self._size)
        self._data.append(value)

    def _dispatch(self, events: list[str]) -> None:
        if self._data:
            events.append("\n".join(self._data))
            self._data.clear()
            self._size = 0

    def _check_size(self, size: int) -> None:
        if size > self._max:
            raise ResponseValidationError(
                f"stream event larger than {self._max} bytes", body_excerpt=""
            )


def decode_payload(payload: str) -> list[Any]:
    """The JSON values in one event payload (``[DONE]`` stays the string ``"[DONE]"``).

    Raises:
        ResponseValidationError: the payload is not JSON.
    """
    text = payload.strip(_WHITESPACE)
    if text == DONE:
        return [DONE]
    if not text:
        return []
    try:
        return [loads(text)]
    except (ValueError, RecursionError):
        pass
    values: list[Any] = []
    position = 0
    while position < len(text):
        try:
            value, position = _JSON.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            raise ResponseValidationError(
                f"stream event is not JSON: {excerpt(text)}", body_excerpt=excerpt(text)
            ) from exc
        values.append(value)
        while position < len(text) and text[position] in _WHITESPACE:
            position += 1
        if text.startswith(DONE, position):
            values.append(DONE)
            position += len(DONE)
    return values
