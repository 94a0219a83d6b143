"""POST /v1/embeddings in OpenAI's shape, served by the sentence-embedding model (GPT_EMBEDDING_MODEL_SOURCE).

all-MiniLM-L6-v2 reads at most 256 tokens of each input (roughly 1,000 characters of English): the rest of a
longer input does not change its vector. Vectors are unit length (a dot product is the cosine), 384 floats.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator
from pydantic_core import PydanticCustomError

from gpt_runtime.api.responses import error_response, errors
from gpt_runtime.deps import CurrentUser, Runtime, RuntimeDep
from gpt_runtime.domain_errors import Disabled, InvalidInput, NotFound
from gpt_runtime.services.embeddings import EmbeddingService

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_INPUTS = 64
MAX_INPUT_CHARS = 8192
DISABLED = error_response(501, "Embeddings are off on this server (GPT_EMBEDDING_MODEL_SOURCE=none).")

Text = Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]


def embedding_service(runtime: Runtime) -> EmbeddingService:
    """The runtime's embedding service; 501 when this server runs without one."""
    if runtime.embeddings is None:
        raise Disabled(
            "embeddings are disabled on this server (GPT_EMBEDDING_MODEL_SOURCE=none)", code="embeddings_disabled"
        )
    return runtime.embeddings


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description=f"A text or up to {MAX_INPUTS} texts of at most {MAX_INPUT_CHARS} characters each; the model "
        "reads the first 256 tokens of each (token arrays are not accepted)."
    )
    model: str | None = Field(default=None, max_length=256, description="The embedding model's id, if given")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: each vector's little-endian float32 bytes"
    )
    dimensions: int | None = Field(default=None, ge=1, le=4096, description="Only the model's own (384)")
    user: str | None = Field(default=None, max_length=256, description="Accepted and not used")

    @field_validator("input", mode="wrap")
    @classmethod
    def _one_message(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        """One error naming `input` (not each member of the union)."""
        try:
            return handler(value)
        except ValidationError as exc:
            raise PydanticCustomError(
                "invalid_input",
                f"must be a text or a list of 1 to {MAX_INPUTS} texts, each 1 to {MAX_INPUT_CHARS} characters",
            ) from exc


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


@router.post("/embeddings", responses=errors(404, 503) | {501: DISABLED})
async def create_embeddings(body: EmbeddingsIn, _: CurrentUser, runtime: RuntimeDep) -> EmbeddingsOut:
    """Embed one text or a list of texts (OpenAI's /v1/embeddings)."""
    service = embedding_service(runtime)
    model = await service.loaded()
    if body.model is not None and body.model != model.model_id:
        raise NotFound(
            f"the model {body.model!r} does not exist; this server embeds with {model.model_id!r}",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != model.dim:
        raise InvalidInput(
            f"{model.model_id} makes {model.dim}-dimensional vectors only", param="dimensions", code="invalid_value"
        )
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    vectors, tokens = await service.embed(texts)
    return EmbeddingsOut(
        data=[EmbeddingOut(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)],
        model=model.model_id,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
