"""Image routes: POST /generate-image (images kept as files of a conversation) and POST /v1/images/generations
(OpenAI's shape). Both need GPT_IMAGE_MODEL_SOURCE; without it they answer 501 not_configured.

The images are PNGs stored through the file store, like uploads: `url` is GET /files/{id}, which needs the
same bearer token (or API key) as any other route.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from gpt_model.images import MAX_IMAGES, MAX_SEED, ImageRequestError, parse_size
from pydantic import BaseModel, ConfigDict, Field

from gpt_runtime.api.responses import error_response, errors
from gpt_runtime.deps import CurrentUser, Runtime, RuntimeDep
from gpt_runtime.domain_errors import InvalidInput, NotFound
from gpt_runtime.services.images import ImageService, as_domain_error, not_configured

router = APIRouter(tags=["images"])

SIZE_PATTERN = r"^[0-9]{1,5}[xX][0-9]{1,5}$"
SIZE_HELP = (
    '"WIDTHxHEIGHT": each side a multiple of 8 from 64 to GPT_IMAGE_MAX_SIDE (at most 1024); default 512x512, '
    "or the largest side allowed when that is smaller"
)
NOT_CONFIGURED = {501: error_response(501, "Image generation is not configured here (code not_configured).")}
ROUTE_ERRORS = errors(404, 500, 503) | NOT_CONFIGURED


class GenerateImageIn(BaseModel):
    """POST /generate-image."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="What to draw; at most the image model's token limit (77 for SD)")
    size: str | None = Field(default=None, max_length=11, pattern=SIZE_PATTERN, description=SIZE_HELP)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES, description="How many images")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="Image i uses seed + i (mod 2^32); random when absent"
    )
    conversation_id: str | None = Field(
        default=None, max_length=64, description="The caller's conversation to keep the images in; a new one if absent"
    )


class ImageOut(BaseModel):
    file_id: str
    url: str = Field(description="GET it with the same bearer token")
    width: int
    height: int
    seed: int = Field(description="Asking for one image with this seed (and the same prompt and size) makes it again")


class GenerateImageOut(BaseModel):
    conversation_id: str
    images: list[ImageOut]


# OpenAI's fields this server does not honour: refused (400, `param` names it) unless they ask for the default
UNSUPPORTED = {
    "quality": ("auto", "standard"),
    "style": (),
    "background": ("auto",),
    "moderation": ("auto",),
    "output_format": ("png",),
    "output_compression": (),
    "stream": (False,),
    "partial_images": (0,),
}


class ImageGenerationIn(BaseModel):
    """POST /v1/images/generations (OpenAI's Images API). `seed` is this server's addition."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})

    prompt: str = Field(min_length=1)
    model: str | None = Field(default=None, max_length=200, description="the image model's id, if given")
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(
        default=None, max_length=11, pattern=r"^([0-9]{1,5}[xX][0-9]{1,5}|auto)$", description=SIZE_HELP + '; "auto"'
    )
    response_format: Literal["url", "b64_json"] = "url"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    user: str | None = Field(default=None, max_length=256, description="accepted, without effect")

    def check_fields(self) -> None:
        """400 for a field this server does not honour."""
        for name, value in (self.model_extra or {}).items():
            if value is None or value in UNSUPPORTED.get(name, ()):
                continue
            if name in UNSUPPORTED:
                raise InvalidInput(f"{name} is not supported here", param=name, code="unsupported_parameter")
            raise InvalidInput(f"unrecognized request argument: {name}", param=name, code="unknown_parameter")


def _service(runtime: Runtime) -> ImageService:
    if runtime.images is None:
        raise not_configured()
    return runtime.images


def _size(service: ImageService, size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return service.default_size()
    try:
        return parse_size(size, service.max_side)
    except ImageRequestError as exc:
        raise as_domain_error(exc) from None


def _file_url(request: Request, runtime: Runtime, file_id: str) -> str:
    base = runtime.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/files/{file_id}"


@router.post("/generate-image", responses=ROUTE_ERRORS)
async def generate_image(
    body: GenerateImageIn, request: Request, user: CurrentUser, runtime: RuntimeDep
) -> GenerateImageOut:
    """Draw `n` images of `prompt`; they are kept as PNG files of the conversation (a new one when no
    `conversation_id` is given). Another user's conversation answers 404 and nothing is made or stored."""
    service = _service(runtime)
    width, height = _size(service, body.size)
    result = await service.generate(
        user,
        body.prompt,
        width,
        height,
        n=body.n,
        seed=body.seed,
        conversation_id=body.conversation_id,
        new_conversation=body.conversation_id is None,
    )
    assert result.conversation_id is not None
    return GenerateImageOut(
        conversation_id=result.conversation_id,
        images=[
            ImageOut(
                file_id=stored.file_id or "",
                url=_file_url(request, runtime, stored.file_id or ""),
                width=stored.image.width,
                height=stored.image.height,
                seed=stored.image.seed,
            )
            for stored in result.images
        ],
    )


@router.post("/v1/images/generations", tags=["openai"], responses=ROUTE_ERRORS)
async def image_generations(
    body: ImageGenerationIn, request: Request, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Any]:
    """OpenAI's image generation. `url` answers are stored as the caller's files (no conversation) and
    fetched with the same key; `b64_json` answers carry the PNG and store nothing."""
    service = _service(runtime)
    if body.model is not None and body.model != service.model_id:
        raise NotFound(
            f"the model {body.model!r} does not exist; this server draws with {service.model_id!r}",
            param="model",
            code="model_not_found",
        )
    body.check_fields()
    width, height = _size(service, body.size)
    as_url = body.response_format == "url"
    result = await service.generate(user, body.prompt, width, height, n=body.n, seed=body.seed, store=as_url)
    data = [
        {"url": _file_url(request, runtime, stored.file_id or "")}
        if as_url
        else {"b64_json": base64.b64encode(stored.image.png).decode("ascii")}
        for stored in result.images
    ]
    return {"created": int(time.time()), "data": data}
