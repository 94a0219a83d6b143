"""Serve the built page: `GET /` (index.html, revalidated on every load) and `GET /assets/<name>-<hash>.<ext>`
(content-hashed, cached for a year, immutable). CDN-ready: a cache may keep the assets forever and must revalidate
the HTML, which names the current assets. Public (the page holds no data; the API behind it asks for a token), and
kept out of the OpenAPI schema. Without a build, `/` answers 503 with a one-line page saying how to build it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from gpt_runtime.domain_errors import NotFound

DIST_DIR = Path(__file__).parent / "dist"
# Scripts, styles and fonts only from this origin, no inline code; what is rendered from replies is sanitized on
# top of this. 'self' in connect-src covers the page's own ws:// and wss:// origin (CSP level 3).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HTML_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
NOT_BUILT = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>gpt-runtime</title>"
    "<p>The web page is not built: run <code>bash hack/web.sh</code> and reload. "
    'The API works without it: <a href="/docs">/docs</a>.</p></html>'
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _not_modified(request: Request, asset: Asset, headers: dict[str, str]) -> Response | None:
    tags = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip().removeprefix("W/") for tag in tags.split(",")):
        return Response(status_code=304, headers={**headers, "ETag": asset.etag})
    return None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class WebPage:
    """The build in `dist_dir`, held in memory (a few hundred kB). Each request to `/` looks at index.html's mtime
    (one stat), so a build made beside a running server (`hack/web.sh`) is served without a restart."""

    def __init__(self, dist_dir: Path = DIST_DIR):
        self.dist_dir = dist_dir
        self.index: Asset | None = None
        self.assets: dict[str, Asset] = {}
        self.loaded_mtime: int | None = None
        self.load()

    def load(self) -> bool:
        """Read the build if index.html changed since the last read; False when there is no build."""
        index = self.dist_dir / "index.html"
        mtime = _mtime(index)
        if mtime is None:
            self.index, self.assets, self.loaded_mtime = None, {}, None
            return False
        if mtime == self.loaded_mtime:
            return True
        assets: dict[str, Asset] = {}
        folder = self.dist_dir / "assets"
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _ASSET_NAME.match(path.name):
                    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
                    assets[path.name] = _asset(path.read_bytes(), content_type)
        self.assets = assets
        self.index = _asset(index.read_bytes(), "text/html; charset=utf-8")
        self.loaded_mtime = mtime
        return True

    def page(self, request: Request) -> Response:
        if not self.load():
            return HTMLResponse(NOT_BUILT, status_code=503, headers={**HTML_HEADERS, "Retry-After": "60"})
        assert self.index is not None
        return _not_modified(request, self.index, HTML_HEADERS) or Response(
            self.index.body,
            media_type=self.index.content_type,
            headers={**HTML_HEADERS, "ETag": self.index.etag},
        )

    def asset(self, request: Request, name: str) -> Response:
        asset = self.assets.get(name)
        if asset is None:
            raise NotFound("no such asset", param="name", code="asset_not_found")
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        return _not_modified(request, asset, headers) or Response(
            asset.body, media_type=asset.content_type, headers={**headers, "ETag": asset.etag}
        )


def web_router(dist_dir: Path | None = None) -> APIRouter:
    """`/` and `/assets/{name}` for the build in `dist_dir` (default: the package's `webui/dist`)."""
    web = WebPage(dist_dir or DIST_DIR)
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        return web.page(request)

    @router.api_route("/assets/{name}", methods=["GET", "HEAD"])
    async def asset(request: Request, name: str) -> Response:
        return web.asset(request, name)

    return router
