"""create_app(settings): the FastAPI app; its lifespan builds the engine and backends into app.state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from gpt_model.images import open_image_generator
from gpt_model.protocol import EngineClient
from gpt_model.registry import open_engine

from gpt_runtime.api import (
    account_pages,
    admin,
    auth,
    conversations,
    embeddings,
    files,
    generate,
    health,
    images,
    jobs,
    keys,
    openai,
    search,
    usage,
    voice,
    ws,
)
from gpt_runtime.auth import build_auth
from gpt_runtime.auth.api_keys import ApiKeys
from gpt_runtime.backends.factory import open_cache, open_counter, open_file_store, open_queue
from gpt_runtime.backends.memory import MemoryCache
from gpt_runtime.deps import Runtime
from gpt_runtime.docs import install_docs
from gpt_runtime.errors import install_error_handlers
from gpt_runtime.mail import EmailSender
from gpt_runtime.mail.factory import open_email_sender
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.metrics import Metrics
from gpt_runtime.middleware import RequestContextMiddleware
from gpt_runtime.openapi import install_openapi
from gpt_runtime.read_cache import ReadCacheMiddleware
from gpt_runtime.services.admission import AdmissionGate
from gpt_runtime.services.cache import CacheService
from gpt_runtime.services.embeddings import EmbeddingService
from gpt_runtime.services.generation import GenerationService
from gpt_runtime.services.images import ImageService
from gpt_runtime.services.jobs import JobService, Worker
from gpt_runtime.services.limits import Limits
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import open_store
from gpt_runtime.voice import VoiceService
from gpt_runtime.webui import web_router

log = logging.getLogger("gpt_runtime")


async def build_runtime(
    settings: RuntimeSettings,
    metrics: Metrics,
    *,
    engine: EngineClient | None = None,
    email: EmailSender | None = None,
    embeddings: bool = True,
    images: bool = False,
    voice: bool = False,
) -> Runtime:
    """Open every backend and start the engine: what the API and the worker share (the worker without the
    embedding model: conversation search indexes at search time, in the API)."""
    store = open_store(settings.resolved_database_url)
    await store.open()
    log.info("loading model", extra={"model_source": settings.model_source})
    # Loading (and on first use converting) weights blocks: keep the event loop free meanwhile.
    model = engine
    if model is None:
        model = await asyncio.to_thread(
            open_engine,
            settings.model_source,
            api_key=settings.engine_api_key.get_secret_value() if settings.engine_api_key else None,
            **settings.model_engine_options(),
        )
    await model.start()
    counter = open_counter(settings.ratelimit_url, on_redis_error=metrics.redis_error)
    cache_backend = open_cache(settings.cache_url, on_redis_error=metrics.redis_error)
    # A per-process cache keeps its users' data versions in the store, so every process sees every write.
    versions = store if isinstance(cache_backend, MemoryCache) else None
    cache = CacheService(cache_backend, metrics, versions)
    queue = open_queue(
        settings.resolved_queue_url,
        visibility_timeout_s=settings.job_visibility_timeout_s,
        max_receives=settings.job_max_receives,
        on_redis_error=metrics.redis_error,
    )
    files = open_file_store(settings.resolved_files_url)
    await files.open()
    limits = Limits(counter, settings, metrics)
    gate = AdmissionGate(settings.max_concurrent_generations, settings.max_waiting_generations, metrics)
    generation = GenerationService(store, model, metrics, settings, limits=limits, cache=cache, gate=gate)
    outbox = Outbox(email or open_email_sender(settings))
    api_keys = ApiKeys(store, max_per_user=settings.api_key_max_per_user)
    embedding_service = None
    if embeddings and settings.embedding_model_source.strip() != "none":
        embedding_service = EmbeddingService(
            settings.embedding_model_source,
            store,
            index_batch=settings.search_index_batch,
            cache_bytes=settings.search_cache_mb * 2**20,
            load_wait_s=settings.embedding_load_wait_s,
        )  # loads on first use
    image_service = None
    if images and settings.image_model_source.strip():  # the API's; job workers make no images
        log.info("loading image model", extra={"image_model_source": settings.image_model_source})
        generator = await asyncio.to_thread(
            open_image_generator,
            settings.image_model_source,
            settings.model_cache_dir,
            settings.model_dtype,
            threads=settings.model_threads or None,
        )
        image_service = ImageService(generator, settings, store, files, limits, cache)
    voice_service = None
    if voice:  # the API's; job workers speak and listen to no one
        voice_service = VoiceService.from_settings(settings)
        await voice_service.start()
    return Runtime(
        settings=settings,
        store=store,
        engine=model,
        auth=build_auth(settings, store, outbox, api_keys, counter, on_event=metrics.auth_event),
        api_keys=api_keys,
        outbox=outbox,
        metrics=metrics,
        counter=counter,
        limits=limits,
        cache=cache,
        gate=gate,
        queue=queue,
        files=files,
        generation=generation,
        jobs=JobService(store, queue, generation, metrics),
        embeddings=embedding_service,
        images=image_service,
        voice=voice_service,
    )


async def close_runtime(runtime: Runtime) -> None:
    if runtime.embeddings is not None:
        await runtime.embeddings.close()
    if runtime.images is not None:
        runtime.images.close()
    await runtime.outbox.close()
    await runtime.engine.close()
    for backend in (runtime.queue, runtime.cache.backend, runtime.counter, runtime.files):
        with contextlib.suppress(Exception):
            await backend.close()
    await runtime.store.close()


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
        in_process = settings.worker_in_process
        if in_process is None:
            in_process = settings.embedded_queue
        if not in_process and settings.embedded_queue:
            raise RuntimeError(
                "GPT_WORKER_IN_PROCESS=false with the embedded job queue (GPT_QUEUE_URL unset, sqlite:// or"
                " memory://): no process could run the jobs. Set a redis:// or sqs:// GPT_QUEUE_URL for separate"
                " workers, or leave GPT_WORKER_IN_PROCESS unset"
            )
        runtime = await build_runtime(settings, metrics, engine=engine, email=email, images=True, voice=True)
        app.state.runtime = runtime
        worker_task = worker = None
        app.state.worker = None
        if in_process:
            worker = Worker(runtime.jobs, runtime.queue, max_receives=settings.job_max_receives)
            worker_task = asyncio.create_task(worker.run())
            app.state.worker = worker
        log.info(
            "runtime ready",
            extra={
                "model": runtime.engine.model_id,
                "context_window": runtime.engine.context_window,
                "in_process_worker": in_process,
            },
        )
        try:
            yield
        finally:
            if worker is not None and worker_task is not None:
                worker.stop()  # its loops end because it stops: no "loop ended" error at shutdown
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
            await close_runtime(runtime)

    app = FastAPI(
        title="gpt-operator runtime",
        version="0.1.0",
        description="Conversation API served by every model pod.",
        lifespan=lifespan,
        docs_url=None,  # gpt_runtime.docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_openapi(app, identity_provider=settings.auth_provider != "local")
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(ReadCacheMiddleware)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        # multipart framing on top of the file itself
        path_limits={path: settings.max_upload_bytes + 64 * 1024 for path in ("/upload", "/transcribe")},
        revision=settings.revision,
    )
    # search first: GET /conversations/search must not be taken for GET /conversations/{conversation_id}
    modules = (search, conversations, generate, openai, embeddings, auth, keys, account_pages, jobs, files, usage)
    for module in (*modules, images, voice, admin, health, ws):
        app.include_router(module.router)
    app.include_router(web_router(settings.web_dist_dir))  # the chat page at / (public, not in the schema)
    return app
