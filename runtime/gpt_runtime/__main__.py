"""`python -m gpt_runtime`: serve the runtime with uvicorn on GPT_HOST:GPT_PORT."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from gpt_runtime.app import create_app
from gpt_runtime.logging_setup import configure_logging
from gpt_runtime.settings import RuntimeSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpt_runtime", description="Serve the GPT runtime API.")
    parser.add_argument("--host", help="bind address (GPT_HOST)")
    parser.add_argument("--port", type=int, help="port (GPT_PORT)")
    parser.add_argument("--model", help="model source, e.g. builtin:tiny or fake:echo (GPT_MODEL_SOURCE)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "model_source": args.model}.items() if v}
    settings = RuntimeSettings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("gpt_runtime").info(
        "starting runtime",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "docs": f"http://{settings.host}:{settings.port}/docs",
        },
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=settings.max_body_bytes,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
