"""The sentence-embedding model behind POST /v1/embeddings and conversation search.

Loaded on first use (GPT_EMBEDDING_MODEL_SOURCE, gpt_model.embeddings), in a thread, so a pod that never
searches never pays its memory (about 100 MB, and torch itself in a runtime that fronts an engine) or its start
time: the first call waits up to GPT_EMBEDDING_LOAD_WAIT_S for it, then answers 503 `embeddings_loading` with
Retry-After while loading goes on; if loading failed, 503 `embeddings_unavailable`. With the source `none` the
runtime has no EmbeddingService at all and the routes answer 501 (api/embeddings.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np
from gpt_model.embeddings import SentenceEmbedder, check_source, open_embedder

from gpt_runtime.domain_errors import Unavailable
from gpt_runtime.services.search import ConversationSearch
from gpt_runtime.storage import Store

log = logging.getLogger("gpt_runtime.embeddings")


class EmbeddingService:
    """The model once loaded, its state until then, and the conversation search that uses it."""

    def __init__(self, source: str, store: Store, *, index_batch: int, cache_bytes: int, load_wait_s: float = 20.0):
        self.source = check_source(source)
        self.load_wait_s = load_wait_s
        self._model: SentenceEmbedder | None = None
        self._failed = False
        self._task: asyncio.Task | None = None
        self.search = ConversationSearch(
            store, self.embed_texts, dim=lambda: self.model.dim, batch=index_batch, cache_bytes=cache_bytes
        )

    def start(self) -> None:
        """Begin loading in a thread unless it has begun."""
        if self._task is None:
            self._task = asyncio.create_task(self._load())

    async def loaded(self) -> SentenceEmbedder:
        """The model, loading it on first use: waits up to load_wait_s, then 503 while loading goes on."""
        if self._model is None and not self._failed:
            self.start()
            assert self._task is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.load_wait_s)
        return self.model

    async def _load(self) -> None:
        log.info("loading embedding model", extra={"embedding_model_source": self.source})
        try:
            self._model = await asyncio.to_thread(open_embedder, self.source)
        except Exception:
            self._failed = True
            log.exception("the embedding model failed to load; /v1/embeddings and search answer 503")
            return
        log.info("embedding model ready", extra={"embedding_model": self._model.model_id if self._model else None})

    @property
    def model(self) -> SentenceEmbedder:
        """The loaded model; 503 while it loads or when it could not be loaded."""
        if self._model is not None:
            return self._model
        if self._failed:
            raise Unavailable("the embedding model could not be loaded", code="embeddings_unavailable", retry_after=60)
        raise Unavailable(
            "the embedding model is still loading; retry shortly",
            code="embeddings_loading",
            retry_after=2,
        )

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Unit vectors (n, dim) float32 and the tokens read, off the event loop."""
        model = await self.loaded()
        return await asyncio.to_thread(model.embed_counted, texts)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        return (await self.embed(texts))[0]

    async def close(self) -> None:
        await self.search.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
