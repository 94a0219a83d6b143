"""Serve the runtime app with the files router included, for the files tests.

Once app.py includes `gpt_runtime.api.files.router` itself this adds nothing (the route is already there).
Run as a script: settings come from GPT_* like `python -m gpt_runtime`.
"""

from __future__ import annotations

import uvicorn
from gpt_runtime.api import files
from gpt_runtime.app import create_app
from gpt_runtime.logging_setup import configure_logging
from gpt_runtime.settings import RuntimeSettings

if __name__ == "__main__":
    settings = RuntimeSettings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    if not any(getattr(route, "path", None) == "/upload" for route in app.routes):
        app.include_router(files.router)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5)
