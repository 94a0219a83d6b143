"""The read cache for conversations, in front of the routers: hits never reach FastAPI.

For the GET routes marked with `openapi_extra=cached_read(kind)` (GET /conversations and GET
/conversations/{id}) and a bearer token it authenticates and rate-limits the caller (the route's
dependency then reuses both), looks the response up under the caller's cache namespace, and answers
a hit with the stored bytes. A miss goes on to the route, and a 200 JSON answer is stored on the way
back. Writers invalidate by bumping the caller's namespace (CacheService.invalidate_user), so no
stale list survives a write.

Which paths are cached is derived from the routes (cached_routes), built once from app.routes on the
first request: a path is a marked route's when that route's own pattern takes it and no route before
it does (GET /conversations/search, which is not cached, is routed before /conversations/{id}).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt_runtime.auth.bearer import bearer_token
from gpt_runtime.domain_errors import DomainError
from gpt_runtime.errors import http_error
from gpt_runtime.services.limits import rate_headers

READ_CACHE = "x-read-cache"  # the openapi_extra key that marks a cached GET route; its value is the cache kind


def cached_read(kind: str) -> dict[str, str]:
    """The openapi_extra of a GET route whose 200 answers are cached per caller, under cache `kind`."""
    return {READ_CACHE: kind}


@dataclass(frozen=True)
class CachedRoute:
    """A cached GET route: its cache kind, its path template (for metrics), its path pattern, and the patterns
    of the routes before it that take some of the same paths."""

    kind: str
    template: str
    pattern: re.Pattern[str]
    earlier: tuple[re.Pattern[str], ...]

    def takes(self, path: str) -> bool:
        """Whether the router sends a GET of `path` to this route."""
        return self.pattern.match(path) is not None and not any(p.match(path) for p in self.earlier)


def _literal_prefix(route: RouteContext) -> str:
    return (route.path_format or "").partition("{")[0]


def _may_overlap(route: RouteContext, other: RouteContext) -> bool:
    """Whether two routes may take some of the same paths: neither's literal prefix rules the other's out."""
    mine, theirs = _literal_prefix(route), _literal_prefix(other)
    return mine.startswith(theirs) or theirs.startswith(mine)


def _takes_get(route: RouteContext) -> bool:
    if isinstance(route.original_route, WebSocketRoute) or getattr(route, "path_regex", None) is None:
        return False
    return not route.methods or "GET" in route.methods  # no methods: a Mount, which takes every method


def cached_routes(routes: Sequence[BaseRoute]) -> tuple[CachedRoute, ...]:
    """The marked GET routes of an app's routes (included routers resolved), in routing order, each with the
    earlier routes that could take its paths first (those whose literal path prefixes overlap with its own)."""
    contexts = list(iter_route_contexts(routes))
    found: list[CachedRoute] = []
    for index, route in enumerate(contexts):
        kind = (getattr(route, "openapi_extra", None) or {}).get(READ_CACHE)
        if kind is None:
            continue
        if route.methods != {"GET"}:
            raise ValueError(f"only a GET route can be read-cached, not {route.methods} {route.path_format}")
        earlier = tuple(
            other.path_regex for other in contexts[:index] if _takes_get(other) and _may_overlap(route, other)
        )
        found.append(CachedRoute(kind, route.path_format or "", route.path_regex, earlier))
    return tuple(found)


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
        self.routes: tuple[CachedRoute, ...] | None = None  # from the app's routes, on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self.routes is None:
            self.routes = cached_routes(scope["app"].routes)
        path = scope["path"]
        match = next((route for route in self.routes if route.takes(path)), None)
        token = _bearer(scope) if match else None
        if match is None or token is None:
            await self.app(scope, receive, send)
            return
        kind, template = match.kind, match.template
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
