"""JSON on the hot path: orjson when installed (the ``speed`` extra), else json.

Both read the same bodies the platform sends and write the same compact UTF-8 JSON;
orjson is several times faster. It is never required:
``pip install "wishub-async[speed]"`` adds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]

loads: Callable[[bytes | str], Any]
dumps: Callable[[Any], bytes]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


try:
    import orjson
except ImportError:  # pragma: no cover - the tests run with orjson installed
    loads, dumps = json.loads, _dumps
else:
    loads = orjson.loads

    def dumps(value: Any) -> bytes:
        """Compact UTF-8 JSON (what ``_dumps`` writes, faster)."""
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
