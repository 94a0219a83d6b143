"""Which GET paths the read cache answers is derived from the routes (gpt_runtime.read_cache.cached_routes)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from gpt_runtime.app import create_app
from gpt_runtime.read_cache import cached_read, cached_routes
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


def _taken(app: FastAPI, path: str) -> tuple[str, str] | None:
    """(cache kind, route template) of the cached route a GET of `path` reaches, or None."""
    route = next((r for r in cached_routes(app.routes) if r.takes(path)), None)
    return (route.kind, route.template) if route else None


def test_marked_routes_are_cached_and_earlier_routes_keep_their_paths():
    router = APIRouter(prefix="/things")
    router.get("/search")(lambda: None)  # before /{thing_id}: takes /things/search, which is not cached
    router.get("", openapi_extra=cached_read("list"))(lambda: None)
    router.get("/{thing_id}", openapi_extra=cached_read("thing"))(lambda: None)
    router.get("/{thing_id}/export")(lambda: None)
    router.post("/{thing_id}")(lambda: None)  # another method on a cached path changes nothing
    app = FastAPI()
    app.get("/other/{name}")(lambda: None)
    app.include_router(router)

    assert _taken(app, "/things") == ("list", "/things")
    assert _taken(app, "/things/abc-1") == ("thing", "/things/{thing_id}")
    assert _taken(app, "/things/search") is None
    assert _taken(app, "/things/abc/export") is None
    assert _taken(app, "/things/") is None
    assert _taken(app, "/other/abc") is None
    assert [route.template for route in cached_routes(app.routes)] == ["/things", "/things/{thing_id}"]


def test_a_route_marked_after_a_catch_all_is_never_taken():
    app = FastAPI()
    app.get("/{anything}")(lambda: None)
    app.get("/things", openapi_extra=cached_read("list"))(lambda: None)
    assert _taken(app, "/things") is None


def test_only_get_routes_can_be_cached():
    app = FastAPI()
    app.post("/things", openapi_extra=cached_read("list"))(lambda: None)
    with pytest.raises(ValueError, match="only a GET route"):
        cached_routes(app.routes)


def test_the_runtime_caches_the_conversation_list_and_a_conversation_but_not_search():
    app = create_app(RuntimeSettings())
    assert [(r.kind, r.template) for r in cached_routes(app.routes)] == [
        ("list", "/conversations"),
        ("conversation", "/conversations/{conversation_id}"),
    ]
    assert _taken(app, "/conversations") == ("list", "/conversations")
    assert _taken(app, "/conversations/3f2a_b-C") == ("conversation", "/conversations/{conversation_id}")
    for path in ("/conversations/search", "/conversations/x/export", "/conversations/", "/usage", "/auth/keys"):
        assert _taken(app, path) is None, path
