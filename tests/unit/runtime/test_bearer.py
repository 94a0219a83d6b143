"""The one bearer-token reading (gpt_runtime.auth.bearer) and the public operations derived from the routes."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI
from gpt_runtime.app import create_app
from gpt_runtime.auth.bearer import bearer_token, websocket_token
from gpt_runtime.deps import AdminUser, CurrentUser, get_current_user, limit_by_ip
from gpt_runtime.openapi import public_operations
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("bearer  x ", "x"),  # stripped
        ("Bearer a b", "a b"),  # only the ends are stripped
        ("Bearer", None),  # no token
        ("Bearer ", None),  # blank token: missing
        ("Bearer    ", None),
        ("Basic x", None),  # another scheme
        ("Bearerx abc", None),
        ("Bearer\tabc", None),  # the scheme ends at a space
        (" Bearer abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("header", "query", "token"),
    [
        ("Bearer abc", "q", "abc"),  # the header wins
        ("bearer  x ", None, "x"),
        ("Bearer ", "q", None),  # a Bearer header with a blank token is missing: no fallback to the query
        ("Bearer", "q", "q"),  # no space: not a Bearer header, the query's token counts
        ("Basic x", "q", "q"),
        (None, "q", "q"),
        (None, " q ", " q "),  # the query's token as sent
        (None, "", None),
        (None, None, None),
        ("", None, None),
    ],
)
def test_websocket_token(header, query, token):
    assert websocket_token(header, query) == token


def test_public_operations_follow_the_current_user_dependency():
    app = FastAPI()
    router = APIRouter(dependencies=[Depends(get_current_user)])

    @app.get("/open", dependencies=[Depends(limit_by_ip)])
    async def open_route() -> None: ...

    @app.post("/open")
    async def open_post(user: CurrentUser) -> None: ...

    @app.get("/admin")
    async def admin(user: AdminUser) -> None: ...

    async def nested(user: CurrentUser) -> str:
        return user.id

    @app.get("/nested")
    async def nested_route(user_id: str = Depends(nested)) -> None: ...

    @router.get("/guarded")
    async def guarded() -> None: ...

    @app.get("/hidden", include_in_schema=False)
    async def hidden() -> None: ...

    app.include_router(router)
    assert public_operations(app) == {("/open", "get")}


def test_the_runtime_public_operations():
    """What anyone may call without a token; a route that lost its CurrentUser would show up here."""
    assert public_operations(create_app(RuntimeSettings())) == {
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/auth/signup", "post"),
        ("/auth/login", "post"),
        ("/auth/refresh", "post"),
        ("/auth/verify-email", "get"),
        ("/auth/verify-email", "post"),
        ("/auth/forgot-password", "post"),
        ("/auth/reset-password", "get"),
        ("/auth/reset-password", "post"),
    }
