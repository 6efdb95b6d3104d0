"""Every exception wishub-async raises on purpose.

``WishubError`` is the root. ``APIError`` means the server answered with an error;
its subclass is chosen from the error-type table (see ``ErrorTable``).
``APIConnectionError`` means no usable answer arrived. No exception ever holds an
AppKey: ``label`` is the key's label or its redacted id (``…`` plus 4 characters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._errors import ErrorRule

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchFileError",
    "BudgetExceededError",
    "ClientClosedError",
    "ClientStateError",
    "ConfigurationError",
    "InvalidRequestError",
    "KeyUnavailableError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "WishubError",
]


class WishubError(Exception):
    """Root of every exception wishub-async raises on purpose."""


class ConfigurationError(WishubError, ValueError):
    """The client was configured wrongly (missing or malformed key, unsafe URL...)."""


class InvalidRequestError(WishubError, ValueError):
    """A request the SDK will not send, so nothing was sent.

    For example a body that is not JSON, a missing model, or a header with control or
    non-ASCII characters (set by a middleware, say).
    """


class BudgetExceededError(WishubError, ValueError):
    """A call that can never fit its rate budget; nothing was sent.

    For example a call reserving more tokens than a whole window allows.
    """


class BatchFileError(InvalidRequestError):
    """A batch file is malformed or cannot be used, so nothing was sent.

    Raised before the first request: a requests file with a bad line (malformed JSON,
    a missing or duplicate ``custom_id``, an unknown URL or method...), a results
    file that is not one, or a results file another run is writing.

    Attributes:
        path: the file.
        line: the line (1-based) of the first problem, or None for the whole file.
        reason: what is wrong there.
        problems: the problems as ``(line, reason)`` pairs in file order (the first
            ones, up to a limit).
        count: how many problems were found in all.
        message: the first problem, and how many more there are.
    """

    def __init__(
        self, path: str, problems: Sequence[tuple[int | None, str]], *, count: int | None = None
    ) -> None:
        self.path = path
        self.problems = tuple(problems)
        self.count = len(self.problems) if count is None else count
        self.line, self.reason = self.problems[0] if self.problems else (None, "unusable")
        where = path if self.line is None else f"{path}, line {self.line}"
        more = self.count - 1
        tail = f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else ""
        self.message = f"{where}: {self.reason}{tail}"
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))


class ClientStateError(WishubError, RuntimeError):
    """The client was used after ``aclose()``, opened twice, or a view was opened."""


class _Labelled:
    label: str | None

    @property
    def key(self) -> str | None:
        """The same as ``label`` (the 0.1 name; ``key`` now always means the secret)."""
        return self.label


class KeyUnavailableError(_Labelled, WishubError):
    """No AppKey can take the request: every candidate is quarantined or cooling.

    Attributes:
        label: the label of the key that was asked for, or None when any key would do.
        reason: a short explanation naming each key's state.
    """

    def __init__(self, reason: str, *, label: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.label = label


class APIError(_Labelled, WishubError):
    """The server answered with an error.

    Attributes:
        status_code: the HTTP status (200 for an error inside a stream).
        type: the platform's error type, such as ``INCORRECT_API_KEY_PROVIDED``.
        code: the platform's numeric code, such as 500004, when it sent one.
        message: the human-readable text the server sent (or a body excerpt).
        param: the offending parameter, when the server named one.
        request_id: the request id from the response headers, when present.
        body: the raw body: parsed JSON when it was JSON, else the text.
        label: the label (or redacted id) of the AppKey that was used.
        retry_after: seconds the server asked us to wait, when it said so.
        should_retry: the server's ``x-should-retry`` header as a bool, when sent.
        rule: the row of the error table that classified it (None if built by hand).
    """

    should_retry: bool | None = None
    rule: ErrorRule | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        code: int | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        label: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.body = body
        self.label = label
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"HTTP {self.status_code}"
        if self.type:
            head += f" {self.type}"
        if self.code is not None:
            head += f" (code {self.code})"
        tail = [f"{name}={value}" for name, value in self._context() if value]
        text = f"{head}: {self.message}"
        return f"{text} [{', '.join(tail)}]" if tail else text

    def _context(self) -> tuple[tuple[str, str | None], ...]:
        return (("param", self.param), ("key", self.label), ("request_id", self.request_id))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, type={self.type!r}, "
            f"code={self.code!r}, message={self.message!r}, label={self.label!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: rebuild through __dict__ so the error pickles (subprocesses).
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[WishubError], state: dict[str, Any]) -> WishubError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class BadRequestError(APIError):
    """The request was malformed or had invalid parameters (400, 422)."""


class AuthenticationError(APIError):
    """The AppKey was rejected (``INCORRECT_API_KEY_PROVIDED``, 401)."""


class PermissionDeniedError(APIError):
    """The AppKey may not use this resource (403)."""


class NotFoundError(APIError):
    """The model or path does not exist for this key (404, ``model_not_found``)."""


class RateLimitError(APIError):
    """Too many requests for this key (429, ``rate_limit_exceeded``)."""


class QuotaExceededError(APIError):
    """The key's quota is used up (``insufficient_quota``), or a model's free quota on it.

    The platform sends a spent free quota as HTTP 429 with the message
    ``免费额度已结束…`` ("the free quota has ended"); the key then rests from that model
    only.
    """


class ServerError(APIError):
    """The platform failed (5xx, 408, ``INVOKE_MODEL_ERROR``); usually transient."""


class APIConnectionError(_Labelled, WishubError):
    """No usable response arrived: refused, reset, closed early, or unreadable.

    Attributes:
        label: the label (or redacted id) of the AppKey that was used, if any.
    """

    def __init__(self, message: str, *, label: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.label = label

    def __str__(self) -> str:
        return f"{self.message} [key={self.label}]" if self.label else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))


class APITimeoutError(APIConnectionError):
    """The request timed out, or the retry deadline ran out."""


class ClientClosedError(ClientStateError, APIConnectionError):
    """``aclose()`` ran while this call was in flight (or before it was sent).

    It is a ``ClientStateError`` (the client is closed: never retried) and an
    ``APIConnectionError`` (no answer came).
    """


class ResponseValidationError(WishubError):
    """A 2xx body was not JSON or did not fit the expected shape.

    Attributes:
        path: where in the body the problem is, such as ``$.data[0].id``.
        body_excerpt: the start of the body, for diagnosis.
    """

    def __init__(self, message: str, *, path: str = "$", body_excerpt: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.body_excerpt = body_excerpt

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})"
