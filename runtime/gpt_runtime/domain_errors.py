"""What can go wrong, in the services' own terms: no HTTP here (no status codes, no headers, no web framework).

Services, storage, auth and backends raise these; the HTTP edge (gpt_runtime.errors) maps each kind to its status,
error type and headers in one table, for the REST handlers, the WebSocket's error frames and the read cache alike.
Every error carries what a client is told: `message` for people, `code` (stable, machine-readable), `param` (the
request field at fault) and `retry_after` (whole seconds after which trying again may succeed).
"""

from __future__ import annotations

from typing import ClassVar, Protocol


class DomainError(Exception):
    """A failure a client caused or should see. Raise one of the kinds below, not this base."""

    default_message: ClassVar[str] = "the request cannot be served"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ):
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after


class InvalidInput(DomainError):
    """The request cannot be served as asked: a malformed or contradictory value, an unknown argument, a prompt
    over the model's context window."""


class InvalidValue(DomainError):
    """A field's value is outside what the server accepts, a check the request schema could not express (the
    same class of failure as a schema validation error)."""


class TooLarge(DomainError):
    """A body, file or prompt over a configured size limit."""


class UnsupportedType(DomainError):
    """Content of a type the server does not take (an upload that is no known file type, audio that is not WAV)."""


class Unauthenticated(DomainError):
    """No caller could be identified: credentials missing, invalid, expired or revoked."""

    default_message = "invalid or missing credentials"


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The thing named does not exist, or not for this caller (others' ids look the same as missing ones)."""


class Conflict(DomainError):
    """The request clashes with what exists (an email already registered)."""


class RateWindow(Protocol):
    """A rate window's numbers, as gpt_runtime.backends.WindowState holds them."""

    @property
    def limit(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_s(self) -> float: ...


class RateLimited(DomainError):
    """A limit on the caller was reached; `retry_after` says when it frees. Raise a subclass, which names the limit.

    `window` is the request window that was exceeded, when it was one (answered with its remaining/reset numbers).
    """

    def __init__(self, message: str, *, retry_after: int, window: RateWindow | None = None):
        super().__init__(message, code="rate_limit_exceeded", retry_after=retry_after)
        self.window = window


class TooManyRequests(RateLimited):
    """Over a requests-per-window limit."""


class TooManyTokens(RateLimited):
    """Over a tokens-per-minute quota."""


class QuotaExceeded(RateLimited):
    """A daily quota (requests or tokens) is used up."""


class ModelFailed(DomainError):
    """The model failed while generating; nothing of the exchange was stored."""

    default_message = "the model failed to generate a reply; nothing was stored"
    default_code = "engine_error"


class Disabled(DomainError):
    """A feature this server was configured without (e.g. GPT_EMBEDDING_MODEL_SOURCE=none)."""


class UpstreamFailed(DomainError):
    """A separate model server (an openai+http:// source) answered with an error of its own."""


class Unavailable(DomainError):
    """The server cannot serve this now (overloaded, still loading, stopping, a dependency unreachable); trying
    again later may work."""
