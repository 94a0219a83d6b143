"""ASGI middleware: request id, revision header, body size limit, metrics and one access log line per request.

Every request but the probes and scrapes (QUIET_PATHS) is activity for `gpt_last_request_timestamp_seconds`: an
HTTP request while it is in flight (a stream until it ends), a WebSocket at each message either way (an open
page's idle socket keeps no deployment awake).

Written as plain ASGI (not BaseHTTPMiddleware) so streaming responses and WebSockets pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt_runtime.errors import error_body
from gpt_runtime.logging_setup import request_id_var
from gpt_runtime.metrics import Metrics

log = logging.getLogger("gpt_runtime.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# the kubelet's probes (api/health.py) and Prometheus: never activity
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


class BodyTooLarge(HTTPException):
    """Raised from receive() when a streamed (chunked) body passes the limit; rendered as a 413 JSON error
    with code payload_too_large by gpt_runtime.errors, like the Content-Length check in the middleware."""

    code = "payload_too_large"

    def __init__(self, limit: int):
        # the rest of the body is never read: the connection closes after the answer
        super().__init__(413, f"request body exceeds {limit} bytes", headers={"Connection": "close"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Gives each request an id (X-Request-ID), names the pod's revision (X-GPT-Revision, when it has one),
    enforces the body limit, records metrics and logs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        path_limits: dict[str, int] | None = None,
        revision: str | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}
        self._fixed_headers: list[tuple[bytes, bytes]] = [(b"x-gpt-revision", revision.encode())] if revision else []
        self._children: dict[tuple[str, str, int], tuple] = {}  # metric children by (method, route, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500 if scope["type"] == "http" else 101
        activity = self.metrics.last_request
        in_flight = scope["type"] == "http" and scope["path"] not in QUIET_PATHS
        if in_flight:
            activity.begin()
        try:
            if scope["type"] == "websocket":
                if scope["path"] in QUIET_PATHS:
                    await self.app(scope, receive, send)
                    return

                async def touching_receive() -> Message:
                    message = await receive()
                    activity.touch()
                    return message

                async def touching_send(message: Message) -> None:
                    activity.touch()
                    await send(message)

                activity.touch()
                await self.app(scope, touching_receive, touching_send)
                return
            length = _header(scope, b"content-length")
            limit = self.path_limits.get(scope["path"], self.max_body_bytes)
            if length is not None and length.isdigit() and int(length) > limit:
                status = 413
                await self._reject(send, request_id, limit)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-id", request_id.encode()))
                    headers.extend(self._fixed_headers)
                    present = {name.lower() for name, _ in headers}
                    for name, value in scope["state"].get("extra_headers", {}).items():
                        if name.lower().encode() not in present:
                            headers.append((name.lower().encode(), value.encode()))
                    message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, limited_receive, send_with_id)
            except BodyTooLarge:
                status = 413
                await self._reject(send, request_id, limit)
        finally:
            if in_flight:
                activity.end()
            self._record(scope, status, time.perf_counter() - started, request_id)
            request_id_var.reset(token)

    async def _reject(self, send: Send, request_id: str, limit: int) -> None:
        body = json.dumps(
            error_body(
                f"request body exceeds {limit} bytes",
                "invalid_request_error",
                None,
                "payload_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                    *self._fixed_headers,
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or scope.get("state", {}).get("route_template") or "unmatched"
        method = scope.get("method", "WS")
        key = (method, template, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(method, template, str(status)),
                self.metrics.duration.labels(method, template),
            )
        children[0].inc()
        children[1].observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "request",
            extra={
                "method": method,
                "path": scope.get("path"),
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
