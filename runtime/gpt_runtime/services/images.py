"""Image generation for the API: one generation at a time per process, a bounded waiting room, and the
images stored through the file store (as files of a conversation, or of the caller alone for /v1).

The pipeline (gpt_model.images) runs on the generator's own worker thread. A caller that gives up (disconnects,
or the server stops) asks the running generation to stop at its next denoising step; the slot is free only once
the thread is done, so two generations never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from dataclasses import dataclass

from gpt_model.images import MAX_SEED, GeneratedImage, ImageGenerator, ImageRequestError

from gpt_runtime.backends.files import FileStore
from gpt_runtime.domain_errors import Disabled, InvalidInput, InvalidValue, ModelFailed, NotFound, TooLarge, Unavailable
from gpt_runtime.services.admission import AdmissionGate
from gpt_runtime.services.cache import CacheService
from gpt_runtime.services.filetypes import sniff_content_type
from gpt_runtime.services.generation import title_from_prompt
from gpt_runtime.services.limits import Limits
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Store, User

log = logging.getLogger("gpt_runtime.images")
PNG = "image/png"


def not_configured() -> Disabled:
    return Disabled(
        "image generation is not configured on this server: set GPT_IMAGE_MODEL_SOURCE to a diffusers pipeline"
        " (a directory or s3://bucket/prefix)",
        code="not_configured",
    )


def conversation_not_found() -> NotFound:
    return NotFound("conversation not found", param="conversation_id", code="conversation_not_found")


@dataclass(frozen=True)
class StoredImage:
    file_id: str | None  # None when the images were not stored (b64_json answers)
    image: GeneratedImage


@dataclass(frozen=True)
class ImageResult:
    images: list[StoredImage]
    conversation_id: str | None


class ImageService:
    """Checks a request, waits for the pipeline, runs it off the event loop, stores the PNGs."""

    def __init__(
        self,
        generator: ImageGenerator,
        settings: RuntimeSettings,
        store: Store,
        files: FileStore,
        limits: Limits,
        cache: CacheService,
    ):
        self.generator = generator
        self.settings = settings
        self.store = store
        self.files = files
        self.limits = limits
        self.cache = cache
        # one generation at a time (pipelines are not thread-safe); the text engine's gauges are not its
        self.gate = AdmissionGate(
            1,
            settings.image_max_waiting,
            busy="the image model is busy",
            waited_for="the image model",
            full_retry_after=5,
        )

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    @property
    def max_side(self) -> int:
        return self.settings.image_max_side

    def default_size(self) -> tuple[int, int]:
        side = min(512, self.max_side)
        return side, side

    def check(self, prompt: str, width: int, height: int, n: int) -> None:
        """Every check that needs no work: 413 for a prompt over GPT_MAX_PROMPT_CHARS, 400 over the model's
        token limit, 422 for a bad size or n."""
        if len(prompt) > self.settings.max_prompt_chars:
            raise TooLarge(
                f"prompt is {len(prompt)} characters; the limit is {self.settings.max_prompt_chars}",
                param="prompt",
                code="prompt_too_large",
            )
        try:
            self.generator.check(prompt, width, height, n, self.settings.image_steps, self.max_side)
        except ImageRequestError as exc:
            raise as_domain_error(exc) from None

    async def generate(
        self,
        user: User,
        prompt: str,
        width: int,
        height: int,
        *,
        n: int = 1,
        seed: int | None = None,
        conversation_id: str | None = None,
        new_conversation: bool = False,
        store: bool = True,
    ) -> ImageResult:
        """Make `n` images and (store) keep them as the caller's files, of `conversation_id`, or of a new
        conversation titled after the prompt (new_conversation). Nothing is stored unless every image is."""
        self.check(prompt, width, height, n)
        if conversation_id is not None and await self.store.get_conversation(user.id, conversation_id) is None:
            raise conversation_not_found()
        await self.limits.check_quota(user)
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
        images = await self._run(prompt, width, height, n, seed)
        await self.limits.charge(user, 0, 0)
        if not store:
            return ImageResult([StoredImage(None, image) for image in images], None)
        return await self._store(user, prompt, images, conversation_id, new_conversation)

    async def _run(self, prompt: str, width: int, height: int, n: int, seed: int) -> list[GeneratedImage]:
        """Wait for the pipeline (503 when the waiting room is full or the wait too long), then run it."""
        await self.gate.acquire("medium", self.settings.queue_timeout_s)
        stop = threading.Event()
        try:
            work = asyncio.wrap_future(
                self.generator.submit(
                    prompt,
                    width,
                    height,
                    n,
                    seed,
                    self.settings.image_steps,
                    max_side=self.max_side,
                    cancelled=stop.is_set,
                )
            )
        except RuntimeError:  # the generator was closed: the server is stopping
            self.gate.release()
            raise Unavailable("the server is stopping", code="shutting_down", retry_after=5) from None
        work.add_done_callback(lambda _: self.gate.release())  # free only once the thread is done
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            raise
        except ImageRequestError as exc:
            raise as_domain_error(exc) from None
        except Exception:
            log.exception("image generation failed")
            raise ModelFailed("the image model failed; nothing was stored") from None

    async def _store(
        self,
        user: User,
        prompt: str,
        images: list[GeneratedImage],
        conversation_id: str | None,
        new_conversation: bool,
    ) -> ImageResult:
        """Store every image (all or nothing) as the caller's files; 404 if the conversation went away."""
        for image in images:
            if sniff_content_type(image.png) != PNG:
                raise ModelFailed("the image model returned no PNG; nothing was stored")
        created = None
        if conversation_id is not None:
            if await self.store.get_conversation(user.id, conversation_id) is None:
                raise conversation_not_found()  # deleted while the images were made
        elif new_conversation:
            created = await self.store.create_conversation(user.id, title_from_prompt(prompt))
            conversation_id = created.id
            await self.cache.invalidate_user(user.id)
        stored: list[StoredImage] = []
        try:
            for image in images:
                file_id = await self.files.put(
                    image.png, PNG, user.id, filename=f"image-{image.seed}.png", conversation_id=conversation_id
                )
                stored.append(StoredImage(file_id, image))
        except BaseException:
            for done in stored:
                with contextlib.suppress(Exception):
                    await self.files.delete(user.id, done.file_id or "")
            if created is not None:
                with contextlib.suppress(Exception):
                    await self.store.delete_conversation(user.id, created.id)
                    await self.cache.invalidate_user(user.id)
            raise
        return ImageResult(stored, conversation_id)

    def close(self) -> None:
        """No new generations; one in progress ends first (its request has gone with the server)."""
        self.generator.close()


def as_domain_error(exc: ImageRequestError) -> InvalidInput | InvalidValue:
    """A prompt over the model's token limit is a 400 (as for text); a bad size, n or seed a 422."""
    if exc.code == "context_length_exceeded":
        return InvalidInput(str(exc), param=exc.param, code=exc.code)
    return InvalidValue(str(exc), param=exc.param, code=exc.code)
