"""The HTTP edge of every failure: domain errors mapped to HTTP in one table, and the handlers that turn every
failure into one JSON shape.

Body: {"error": {"message", "type", "param", "code"}} (OpenAI's shape), for 4xx and 5xx alike. Services raise
gpt_runtime.domain_errors; HTTP_KINDS says which status, error type and headers each kind answers with, for the
REST handlers here, the WebSocket's error frames (api/ws.py) and the read cache (read_cache.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gpt_runtime import domain_errors as domain
from gpt_runtime.services.limits import rate_headers

log = logging.getLogger("gpt_runtime.errors")


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for people.")
    type: str = Field(description="The class of error, e.g. invalid_request_error, authentication_error, overloaded.")
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str | None = Field(description="A stable machine-readable code, e.g. conversation_not_found.")


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx answer (OpenAI's shape)."""

    error: ErrorDetail


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    """The JSON error body every failure uses."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True)
class HTTPKind:
    """How one kind of domain error answers over HTTP."""

    status: int
    type: str
    headers: Mapping[str, str] = field(default_factory=dict)


# The one table: each domain error kind -> its HTTP status, error type and fixed headers (a subclass not named here
# answers as its nearest named base). Retry-After comes from the error's retry_after, X-RateLimit-* from its window.
HTTP_KINDS: dict[type[domain.DomainError], HTTPKind] = {
    domain.DomainError: HTTPKind(400, "invalid_request_error"),
    domain.InvalidInput: HTTPKind(400, "invalid_request_error"),
    domain.Unauthenticated: HTTPKind(401, "authentication_error", {"WWW-Authenticate": "Bearer"}),
    domain.Forbidden: HTTPKind(403, "permission_error"),
    domain.NotFound: HTTPKind(404, "not_found_error"),
    domain.Conflict: HTTPKind(409, "conflict_error"),
    domain.TooLarge: HTTPKind(413, "invalid_request_error"),
    domain.UnsupportedType: HTTPKind(415, "invalid_request_error"),
    domain.InvalidValue: HTTPKind(422, "invalid_request_error"),
    domain.RateLimited: HTTPKind(429, "rate_limit_error"),
    domain.TooManyRequests: HTTPKind(429, "requests"),
    domain.TooManyTokens: HTTPKind(429, "tokens"),
    domain.QuotaExceeded: HTTPKind(429, "insufficient_quota"),
    domain.ModelFailed: HTTPKind(500, "api_error"),
    domain.Disabled: HTTPKind(501, "not_implemented_error"),
    domain.UpstreamFailed: HTTPKind(502, "api_error"),
    domain.Unavailable: HTTPKind(503, "overloaded"),
}


def http_kind(kind: type[domain.DomainError]) -> HTTPKind:
    """The table's row for a kind of domain error: its own, else its nearest base's."""
    for cls in kind.__mro__:
        if cls in HTTP_KINDS:
            return HTTP_KINDS[cls]
    raise TypeError(f"{kind.__name__} is not a domain error")


@dataclass(frozen=True)
class HTTPError:
    """A domain error as an HTTP answer: status, JSON body and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def http_error(exc: domain.DomainError) -> HTTPError:
    """The answer a client gets for a domain error, whichever transport carries it."""
    kind = http_kind(type(exc))
    headers = dict(kind.headers)
    if isinstance(exc, domain.RateLimited) and exc.window is not None:
        headers.update(rate_headers(exc.window))
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return HTTPError(kind.status, error_body(exc.message, kind.type, exc.param, exc.code), headers)


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded",
}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or None


async def _domain_error(_: Request, exc: domain.DomainError) -> JSONResponse:
    answer = http_error(exc)
    return JSONResponse(answer.body, answer.status, headers=answer.headers or None)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    type_ = _STATUS_TYPES.get(exc.status_code, "api_error")
    code = getattr(exc, "code", None)  # e.g. the body limit's payload_too_large (gpt_runtime.middleware)
    return JSONResponse(error_body(message, type_, None, code), exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "value_error"}
    if first.get("type") == "json_invalid":
        return JSONResponse(
            error_body("request body is not valid JSON", "invalid_request_error", None, "invalid_json"), 400
        )
    param = _param(tuple(first.get("loc", ())))
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return JSONResponse(error_body(message, "invalid_request_error", param, str(first.get("type"))), 422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal server error", "api_error", None, "internal_error"), 500)


def _json_websocket_not_found(default: ASGIApp) -> ASGIApp:
    """A WebSocket to no route is refused with a JSON 404 (Starlette's own is a 403 with an empty body),
    where the server lets the app answer the handshake (the websocket.http.response extension)."""

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and "websocket.http.response" in scope.get("extensions", {}):
            response = JSONResponse(error_body("Not Found", "not_found_error", None, "route_not_found"), 404)
            await WebSocket(scope, receive, send).send_denial_response(response)
            return
        await default(scope, receive, send)

    return not_found


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers so no response ever carries FastAPI's default {"detail": ...}."""
    app.router.default = _json_websocket_not_found(app.router.default)
    # Starlette types every handler as taking Exception, though it calls each only with the class it is registered for
    app.add_exception_handler(domain.DomainError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
