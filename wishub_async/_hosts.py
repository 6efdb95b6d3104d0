"""The platform's hosts by name (``host="x6"``), and how a client picks its base URL."""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Literal

from .exceptions import ConfigurationError

__all__ = ["HOSTS", "HostName", "choose_base_url"]

HostName = Literal["x1", "x6", "gateway", "coding"]
"""The names ``host=`` (and ``wishub --host``) accept."""

HOSTS: Mapping[str, str] = types.MappingProxyType(
    {
        "x1": "https://wishub-x1.ctyun.cn/v1",
        "x6": "https://wishub-x6.ctyun.cn/v1",
        "gateway": "https://ai.ctaigw.cn/v1",
        "coding": "https://wishub-x6.ctyun.cn/coding/v1",
    }
)
"""The base URL of each named host (read-only):

- ``x1``: the documented host, and the default;
- ``x6``: the live host of 2026, where models are usually called by name;
- ``gateway``: the ``ai.ctaigw.cn`` gateway of the "Token 服务" documentation;
- ``coding``: the Coding Plan (OpenAI-style chat below ``/coding/v1``).

Any other root is a ``base_url=``.
"""


def choose_base_url(host: object, base_url: str | None) -> str:
    """The base URL a client uses: ``base_url=``, else ``host=``, else the environment.

    With neither argument: ``WISHUB_BASE_URL``, else the ``x1`` host. The URL itself
    is checked later, with the other options.

    Raises:
        ConfigurationError: both arguments were given, or ``host`` names no host.
    """
    if host is None:
        return base_url or os.environ.get("WISHUB_BASE_URL") or HOSTS["x1"]
    if base_url is not None:
        raise ConfigurationError("give host= or base_url=, not both")
    url = HOSTS.get(host) if isinstance(host, str) else None
    if url is None:
        raise ConfigurationError(f"unknown host {host!r}; known hosts: {', '.join(HOSTS)}")
    return url
