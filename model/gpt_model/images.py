"""Image generation with a diffusers pipeline: load it from a model source, check a request, make PNGs.

Sources, as for the text model: a local directory in diffusers' layout (`model_index.json` and one folder per
component; a PersistentVolumeClaim is a mounted directory), `file:///path`, or `s3://bucket/prefix`, mirrored
once into `<cache>/s3/` with gpt_model.s3 (objects checked by size and ETag). Loading never touches the network
(`local_files_only`, HF_HUB_OFFLINE). torch and diffusers are imported only when a pipeline is opened.

A pipeline is not thread-safe: one generation runs at a time (a lock), and `submit` runs them all on one
worker thread of the generator's own, whose torch thread count is fixed (`threads`, which the runtime fills
from GPT_MODEL_THREADS; else torch's default): a CPU result depends on how many threads share a reduction, so
a pool thread with another setting could draw other bytes. Image i of a request is made with its own generator
seeded `(seed + i) mod 2**32`, so any image is made again, byte for byte, by asking for one image with the seed
it was reported with.
"""

from __future__ import annotations

import inspect
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt_model.paths import cache_root, offline

MIN_SIDE = 64
MAX_SIDE = 1024
SIDE_MULTIPLE = 8
MAX_IMAGES = 4
MAX_STEPS = 200
MAX_SEED = 2**32 - 1  # what diffusion UIs use; also exact in JavaScript numbers


class ImageRequestError(ValueError):
    """A request the generator cannot serve; `param` names the field, `code` says why."""

    def __init__(self, message: str, *, param: str, code: str):
        super().__init__(message)
        self.param = param
        self.code = code


class GenerationCancelled(RuntimeError):
    """The caller gave up while its images were being made."""


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int
    seed: int


def image_seed(seed: int, index: int) -> int:
    """The seed of the index-th image of a request seeded `seed`."""
    return (seed + index) % (MAX_SEED + 1)


def check_size(width: int, height: int, max_side: int = MAX_SIDE) -> None:
    """Both sides multiples of 8, within MIN_SIDE..min(max_side, MAX_SIDE); else ImageRequestError."""
    limit = min(max_side, MAX_SIDE)
    for side in (width, height):
        if not MIN_SIDE <= side <= limit or side % SIDE_MULTIPLE:
            raise ImageRequestError(
                f"size {width}x{height}: each side must be a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {limit}",
                param="size",
                code="invalid_size",
            )


def parse_size(text: str, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Parse "WIDTHxHEIGHT" into (width, height), checked by check_size."""
    width_text, sep, height_text = text.strip().lower().partition("x")
    if not sep or not width_text.isdigit() or not height_text.isdigit() or len(width_text + height_text) > 8:
        raise ImageRequestError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x512", param="size", code="invalid_size")
    width, height = int(width_text), int(height_text)
    check_size(width, height, max_side)
    return width, height


def resolve_source(source: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local directory of a pipeline source (an s3:// prefix is downloaded first)."""
    source = source.strip()
    if source.startswith("s3://"):
        from gpt_model.s3 import download_prefix

        path = download_prefix(source, cache_root(cache_dir) / "s3")
    else:
        path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise ValueError(f"image model source {source!r}: not s3:// nor an existing directory")
    if not (path / "model_index.json").is_file():
        raise ValueError(f"image model source {source!r}: no model_index.json, not a diffusers pipeline")
    return path


def _device_and_dtype(dtype: str | None) -> tuple[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    wanted = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype or "float32")
    if wanted is None:
        raise ValueError(f"unknown dtype {dtype!r}: float32, bfloat16 or float16")
    if device == "cpu" and wanted == torch.float16:
        wanted = torch.float32  # half precision convolutions are not implemented on every CPU
    return device, wanted


def _pin_threads(threads: int) -> None:
    """The worker thread's torch thread count (0: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


class ImageGenerator:
    """A loaded pipeline; `generate` is safe to call from several threads (they take turns), `submit` runs it on
    the generator's own worker thread (what a server should use: the same thread settings for every image)."""

    def __init__(self, pipeline: Any, model_id: str, device: str = "cpu", threads: int = 0):
        self.pipeline = pipeline
        self.model_id = model_id
        self.device = device
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, "image-generator", initializer=_pin_threads, initargs=(threads,))
        self._step_callback = callable(pipeline) and "callback_on_step_end" in inspect.signature(pipeline).parameters
        tokenizer = getattr(pipeline, "tokenizer", None)
        self._tokenizer = tokenizer
        self.max_prompt_tokens: int | None = getattr(tokenizer, "model_max_length", None) if tokenizer else None
        if self.max_prompt_tokens is not None and self.max_prompt_tokens > 100_000:
            self.max_prompt_tokens = None  # "no limit" sentinel of tokenizers without a configured maximum

    def count_prompt_tokens(self, prompt: str) -> int | None:
        """Tokens of the prompt with the pipeline's text tokenizer (specials included), None without one."""
        if self._tokenizer is None:
            return None
        return len(self._tokenizer(prompt, truncation=False, verbose=False)["input_ids"])

    def check(self, prompt: str, width: int, height: int, n: int, steps: int, max_side: int = MAX_SIDE) -> None:
        """Raise ImageRequestError for a request this pipeline must not run."""
        if not prompt.strip():
            raise ImageRequestError("prompt is empty", param="prompt", code="empty_prompt")
        check_size(width, height, max_side)
        if not 1 <= n <= MAX_IMAGES:
            raise ImageRequestError(f"n must be 1 to {MAX_IMAGES}", param="n", code="invalid_n")
        if not 1 <= steps <= MAX_STEPS:
            raise ImageRequestError(f"steps must be 1 to {MAX_STEPS}", param="steps", code="invalid_steps")
        used = self.count_prompt_tokens(prompt)
        if used is not None and self.max_prompt_tokens is not None and used > self.max_prompt_tokens:
            raise ImageRequestError(
                f"the prompt takes {used} tokens; the image model reads at most {self.max_prompt_tokens}",
                param="prompt",
                code="context_length_exceeded",
            )

    def generate(
        self,
        prompt: str,
        width: int,
        height: int,
        n: int = 1,
        seed: int = 0,
        steps: int = 30,
        *,
        max_side: int = MAX_SIDE,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[GeneratedImage]:
        """`n` PNG images of `width`x`height`; image i from seed image_seed(seed, i). Blocks: run it in a thread."""
        import torch

        self.check(prompt, width, height, n, steps, max_side)
        if not 0 <= seed <= MAX_SEED:
            raise ImageRequestError(f"seed must be 0 to {MAX_SEED}", param="seed", code="invalid_seed")
        is_cancelled = cancelled or (lambda: False)

        def on_step_end(pipeline: Any, step: int, timestep: Any, outputs: dict) -> dict:
            if is_cancelled():
                pipeline._interrupt = True  # diffusers' own flag: the denoising loop skips the remaining steps
            return {}

        images = []
        with self._lock, torch.inference_mode():
            for index in range(n):
                if is_cancelled():
                    raise GenerationCancelled("image generation cancelled")
                image_seed_i = image_seed(seed, index)
                generator = torch.Generator(device="cpu").manual_seed(image_seed_i)
                extra = {"callback_on_step_end": on_step_end} if self._step_callback else {}
                output = self.pipeline(
                    prompt,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    generator=generator,
                    output_type="pil",
                    **extra,
                )
                if is_cancelled():
                    raise GenerationCancelled("image generation cancelled")
                picture = output.images[0]
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                images.append(GeneratedImage(buffer.getvalue(), picture.width, picture.height, image_seed_i))
        return images

    def submit(self, *args: Any, **kwargs: Any) -> Future[list[GeneratedImage]]:
        """`generate(*args, **kwargs)` on the worker thread."""
        return self._worker.submit(self.generate, *args, **kwargs)

    def close(self) -> None:
        """Stop the worker thread once its current generation (if any) ends; queued ones are dropped."""
        self._worker.shutdown(wait=False, cancel_futures=True)


def open_image_generator(
    source: str,
    cache_dir: str | os.PathLike | None = None,
    dtype: str | None = "float32",
    *,
    threads: int | None = None,
    warm_up: bool = True,
) -> ImageGenerator:
    """Resolve `source`, load its pipeline offline, and (warm_up) make one small image so the first request
    does not pay for the kernels' first run. threads: torch's CPU threads on the worker (None: torch's default;
    the runtime passes GPT_MODEL_THREADS, as for the text model: fewer can be faster on a busy node)."""
    offline()  # a missing file is an error, never a download
    path = resolve_source(source, cache_dir)
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # no tqdm bars in the server's log
    device, torch_dtype = _device_and_dtype(dtype)
    pipeline = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    generator = ImageGenerator(pipeline, source.rstrip("/").rsplit("/", 1)[-1] or "image-model", device, threads or 0)
    if warm_up:  # on the worker thread, where requests will run
        generator.submit("warm up", MIN_SIDE, MIN_SIDE, 1, 0, 1).result()
    return generator
