"""create_app(settings): the FastAPI app; its lifespan builds the engine and backends into app.state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from gpt_model.protocol import EngineClient
from gpt_model.registry import open_engine

from gpt_runtime.api import auth, conversations, generate, health, ws
from gpt_runtime.auth import build_auth
from gpt_runtime.auth.email import EmailSender, LogEmailSender
from gpt_runtime.deps import Runtime
from gpt_runtime.errors import install_error_handlers
from gpt_runtime.metrics import Metrics
from gpt_runtime.middleware import RequestContextMiddleware
from gpt_runtime.services.generation import GenerationService
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import open_store

log = logging.getLogger("gpt_runtime")


def create_app(
    settings: RuntimeSettings | None = None,
    *,
    engine: EngineClient | None = None,
    email: EmailSender | None = None,
) -> FastAPI:
    """Build the runtime app. `engine` and `email` override what settings would pick (tests)."""
    settings = settings or RuntimeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.resolved_database_url)
        await store.open()
        model = engine or open_engine(
            settings.model_source,
            dtype=settings.model_dtype,
            max_context_tokens=settings.max_context_tokens,
            cache_dir=str(settings.model_cache_dir) if settings.model_cache_dir else None,
        )
        log.info("loading model", extra={"model_source": settings.model_source})
        await model.start()
        app.state.runtime = Runtime(
            settings=settings,
            store=store,
            engine=model,
            auth=build_auth(settings, store, email or LogEmailSender()),
            metrics=metrics,
            generation=GenerationService(store, model, metrics, settings),
        )
        log.info("runtime ready", extra={"model": model.model_id, "context_window": model.context_window})
        try:
            yield
        finally:
            await model.close()
            await store.close()

    app = FastAPI(
        title="gpt-operator runtime",
        version="0.1.0",
        description="Conversation API served by every model pod.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    for module in (health, auth, conversations, generate, ws):
        app.include_router(module.router)
    return app
