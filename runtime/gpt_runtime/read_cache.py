"""The read cache for conversations, in front of the routers: hits never reach FastAPI.

For GET /conversations and GET /conversations/{id} with a bearer token it authenticates and
rate-limits the caller (the route's dependency then reuses both), looks the response up under
the caller's cache namespace, and answers a hit with the stored bytes. A miss goes on to the
route, and a 200 JSON answer is stored on the way back. Writers invalidate by bumping the
caller's namespace (CacheService.invalidate_user), so no stale list survives a write.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt_runtime.auth.bearer import bearer_token
from gpt_runtime.domain_errors import DomainError
from gpt_runtime.errors import http_error
from gpt_runtime.services.limits import rate_headers

# path pattern -> (cache kind, route template for metrics)
CACHEABLE = (
    (re.compile(r"^/conversations$"), "list", "/conversations"),
    # not /conversations/search: its answers change when background indexing ends, which bumps no version
    (
        re.compile(r"^/conversations/(?!search$)[A-Za-z0-9_-]{1,64}$"),
        "conversation",
        "/conversations/{conversation_id}",
    ),
)


def _bearer(scope: Scope) -> str | None:
    """The first Authorization header's bearer token, read off the scope (no Request built)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def _headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class ReadCacheMiddleware:
    """Serve cached conversation reads without routing, dependencies or serialization."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        match = next(((kind, template) for pattern, kind, template in CACHEABLE if pattern.match(path)), None)
        token = _bearer(scope) if match else None
        if token is None:
            await self.app(scope, receive, send)
            return
        kind, template = match
        runtime = scope["app"].state.runtime
        state = scope.setdefault("state", {})
        try:
            user = await runtime.auth.authenticate(token)
            window = await runtime.limits.check_user(user)
        except DomainError as exc:
            state["route_template"] = template
            answer = http_error(exc)
            await self._send(send, answer.status, json.dumps(answer.body).encode(), answer.headers)
            return
        state["user"] = user
        limit_headers = rate_headers(window) if window is not None else {}
        state["extra_headers"] = {**state.get("extra_headers", {}), **limit_headers}
        query = scope.get("query_string", b"").decode("latin-1")
        namespace = await runtime.cache.user_namespace(user.id)
        if namespace is None:  # the user's data version is unknown: answer from the route, cache nothing
            await self.app(scope, receive, send)
            return
        key = namespace + f"{kind}:{path}?{query}"
        cached = await runtime.cache.get_raw(kind, key)
        if cached is not None:
            state["route_template"] = template
            await self._send(send, 200, cached, {**limit_headers, "X-Cache": "HIT"})
            return
        state["extra_headers"]["X-Cache"] = "MISS"
        status, chunks = 0, []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if status == 200:
            await runtime.cache.set_raw(key, b"".join(chunks), runtime.settings.cache_list_ttl_s)

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": raw + _headers(headers)})
        await send({"type": "http.response.body", "body": body})
