"""The web page's routes: `/` revalidated (no-cache, strict CSP), hashed assets immutable, unknown assets a JSON 404,
no build a 503 page that says how to build it, and none of it in the OpenAPI schema."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gpt_runtime.app import create_app
from gpt_runtime.errors import install_error_handlers
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.webui import web_router

pytestmark = pytest.mark.unit

INDEX = '<!doctype html><script type="module" src="/assets/index-Ab12Cd34.js"></script><div id="app"></div>'


def _client(dist: Path) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(web_router(dist))
    return TestClient(app)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "index-Ab12Cd34.js").write_text("console.log('hi');")
    (tmp_path / "assets" / "index-Ef56Gh78.css").write_text("body{}")
    return tmp_path


def test_the_page_is_revalidated_on_every_load_under_a_strict_csp(dist: Path) -> None:
    response = _client(dist).get("/")
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    again = _client(dist).get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("index-Ab12Cd34.js", "text/javascript; charset=utf-8"), ("index-Ef56Gh78.css", "text/css; charset=utf-8")],
)
def test_hashed_assets_are_cached_for_a_year(dist: Path, name: str, content_type: str) -> None:
    response = _client(dist).get(f"/assets/{name}")
    assert response.status_code == 200
    assert response.content == (dist / "assets" / name).read_bytes()
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/assets/missing-123.js", "/assets/..%2Findex.html", "/assets/a/b.js"])
def test_an_unknown_asset_is_a_json_404(dist: Path, path: str) -> None:
    response = _client(dist).get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "not_found_error"
    assert "immutable" not in response.headers.get("cache-control", "")


def test_without_a_build_the_page_says_how_to_build_it(tmp_path: Path) -> None:
    client = _client(tmp_path / "dist")
    response = client.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "the web page is not built: run <code>bash hack/web.sh</code>" in response.text.lower()
    assert "Traceback" not in response.text
    assert client.get("/assets/index-Ab12Cd34.js").status_code == 404


def test_a_build_made_while_serving_is_picked_up(dist: Path) -> None:
    client = _client(dist)
    assert client.get("/").text == INDEX
    (dist / "assets" / "index-Zz99Yy88.js").write_text("console.log('new');")
    (dist / "index.html").write_text(INDEX.replace("Ab12Cd34", "Zz99Yy88"))
    os.utime(dist / "index.html", ns=(1, 1))  # another mtime, however fast the filesystem's clock
    assert "Zz99Yy88" in client.get("/").text
    assert client.get("/assets/index-Zz99Yy88.js").status_code == 200


def test_the_runtime_serves_the_page_publicly_and_keeps_it_out_of_the_schema(tmp_path: Path, dist: Path) -> None:
    settings = RuntimeSettings(data_dir=tmp_path / "data", model_source="fake:echo", web_dist_dir=dist)
    app = create_app(settings)
    paths = app.openapi()["paths"]
    assert "/" not in paths and not any(p.startswith("/assets") for p in paths)
    client = TestClient(app)  # no lifespan: the page needs no engine, store or token
    page = client.get("/")
    assert page.status_code == 200 and page.text == INDEX
    assert page.headers["x-request-id"]  # through the runtime's own middleware
    assert client.get("/assets/index-Ab12Cd34.js").headers["cache-control"].endswith("immutable")
    assert client.get("/assets/nope.js").json()["error"]["code"] == "asset_not_found"
