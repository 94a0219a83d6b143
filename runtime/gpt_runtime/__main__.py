"""`python -m gpt_runtime`: serve the runtime with uvicorn on GPT_HOST:GPT_PORT."""

from __future__ import annotations

import argparse
import logging
import math

import uvicorn
from fastapi import FastAPI

from gpt_runtime.app import create_app
from gpt_runtime.http_protocol import HTTP_PROTOCOL
from gpt_runtime.logging_setup import configure_logging
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.shutdown import Drain, DrainingServer


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
    app = create_app(settings)
    app.state.drain = drain = Drain()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=settings.max_body_bytes,
        # SIGTERM drains first (shutdown.py); then uvicorn waits for open responses with what is left of this.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        http=HTTP_PROTOCOL,  # uvicorn's own 400s with the JSON error body
        # X-Forwarded-For/-Proto count only from GPT_FORWARDED_ALLOW_IPS (uvicorn's own default would trust
        # loopback, so any local process, or a client on a loopback-exposed port, could pick its address).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or [],
    )
    server = DrainingServer(
        config,
        drain,
        lambda: generations_in_flight(app),
        delay_s=settings.shutdown_delay_s,
        timeout_s=settings.shutdown_timeout_s,
    )
    server.run()


def generations_in_flight(app: FastAPI) -> int:
    """Generations running, waiting for a slot or still streaming (0 before the lifespan has built them)."""
    runtime = getattr(app.state, "runtime", None)
    if runtime is None:
        return 0
    streams = runtime.metrics.active_streams.collect()[0].samples[0].value
    return runtime.gate.running + runtime.gate.waiting + int(streams)


if __name__ == "__main__":
    main()
