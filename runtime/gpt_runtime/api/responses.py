"""OpenAPI `responses=` for the routers: the error answers a route really gives, each with errors.py's body.

Routers declare what is their own (404 conversation_not_found, 409 email_taken, 503 overloaded, ...) with
`errors(...)`; what every route shares is added by gpt_runtime.openapi: 401 and 429 on each route behind a
bearer token, and 400, 413 and 422 on each route with a request body.
"""

from __future__ import annotations

from typing import Any

from gpt_runtime.errors import ErrorOut

DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: the body is not valid JSON (code invalid_json) or a value cannot be used (code says why).",
    401: "Missing, invalid or expired credentials (WWW-Authenticate: Bearer).",
    403: "Authenticated, but not allowed (code says why, e.g. admin_only).",
    404: "Not found, or not the caller's (code says what, e.g. conversation_not_found).",
    409: "Conflicts with what exists (e.g. email_taken).",
    413: "Too large: the body (payload_too_large), the prompt (prompt_too_large) or the file (file_too_large).",
    415: "Unsupported media type (code unsupported_media_type).",
    422: "A field is missing, has the wrong type or is out of range; `param` names it.",
    429: "Rate limit or token quota exceeded (type requests, tokens or insufficient_quota); see Retry-After.",
    500: "The model failed while generating (engine_error); nothing of the exchange was stored.",
    502: "A separate model server (vLLM, llama.cpp) answered with an error (code upstream_error).",
    503: "Overloaded, or a dependency is unavailable (e.g. engine_unavailable); see Retry-After.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
_HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}
# `"stream": true`: the 200 is server-sent events, each `data:` a JSON chunk (or an error body), then [DONE]
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "A JSON chunk, a JSON error body, or [DONE]."},
        "event": {"type": "string"},
    },
}
# what FastAPI's `responses=` takes: status (or 'default') -> OpenAPI response object
Responses = dict[int | str, dict[str, Any]]
EVENT_STREAM: Responses = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One documented error answer: its description, the ErrorOut body and the headers it carries."""
    response: dict[str, Any] = {"model": ErrorOut, "description": description or DESCRIPTIONS[status]}
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def errors(*statuses: int) -> Responses:
    """`responses=` for a router or a route: each status with the project's JSON error body."""
    return {status: error_response(status) for status in statuses}
