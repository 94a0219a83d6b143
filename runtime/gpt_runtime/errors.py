"""API errors and the handlers that turn every failure into one JSON shape.

Body: {"error": {"message", "type", "param", "code"}} (OpenAI's shape), for 4xx and 5xx alike.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

log = logging.getLogger("gpt_runtime.errors")


class APIError(Exception):
    """An error a client caused or should see, with its HTTP status."""

    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


class BadRequest(APIError):
    status_code = 400


class Unauthorized(APIError):
    status_code = 401
    type = "authentication_error"

    def __init__(self, message: str = "invalid or missing credentials", **kwargs: Any):
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(APIError):
    status_code = 403
    type = "permission_error"


class NotFound(APIError):
    status_code = 404
    type = "not_found_error"


class Conflict(APIError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLarge(APIError):
    status_code = 413
    type = "invalid_request_error"


class UnsupportedMediaType(APIError):
    status_code = 415


class UnprocessableEntity(APIError):
    status_code = 422


class ServiceUnavailable(APIError):
    status_code = 503
    type = "overloaded"


class FeatureDisabled(APIError):
    """A feature this server was configured without (e.g. GPT_EMBEDDING_MODEL_SOURCE=none)."""

    status_code = 501
    type = "not_implemented_error"


class BadGateway(APIError):
    """A separate model server (an openai+http:// source) answered with an error of its own."""

    status_code = 502
    type = "api_error"


class EngineFailed(APIError):
    """The model failed while generating; nothing of the exchange was stored."""

    status_code = 500
    type = "api_error"

    def __init__(self, message: str = "the model failed to generate a reply; nothing was stored", **kwargs: Any):
        kwargs.setdefault("code", "engine_error")
        super().__init__(message, **kwargs)


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


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), exc.status_code, headers=exc.headers)


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
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
