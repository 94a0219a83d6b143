"""The chat page at `/`: a Vite build of `web/` (TypeScript), shipped as package data in `webui/dist/`."""

from gpt_runtime.webui.static import DIST_DIR, WebPage, web_router

__all__ = ["DIST_DIR", "WebPage", "web_router"]
