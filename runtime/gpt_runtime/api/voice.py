"""Voice routes: GET /voices, POST /synthesize (text to speech) and POST /transcribe (speech to text).

Engines come from GPT_TTS_ENGINE and GPT_STT_ENGINE (gpt_runtime/voice): espeak-ng and PocketSphinx by default;
`none`, or espeak-ng missing from PATH, answers 501. /transcribe takes PCM WAV (8/16-bit, mono or stereo, any
rate) up to GPT_STT_MAX_SECONDS; with a `conversation_id` the audio is kept as a file of that conversation, as
POST /upload keeps files, and only once it has been transcribed: nothing is stored for audio that fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from gpt_runtime.api.files import _filename
from gpt_runtime.api.responses import Responses, error_response, errors
from gpt_runtime.deps import CurrentUser, Runtime, RuntimeDep
from gpt_runtime.domain_errors import (
    Disabled,
    DomainError,
    InvalidValue,
    NotFound,
    TooLarge,
    Unavailable,
    UnsupportedType,
)
from gpt_runtime.voice import VoiceService
from gpt_runtime.voice.base import (
    MEDIA_TYPES,
    EngineBusy,
    EngineMissing,
    InvalidAudio,
    InvalidVoiceRequest,
    VoiceError,
)

router = APIRouter(tags=["voice"])

MAX_TEXT_CHARS = 4000
DISABLED: Responses = {
    501: error_response(
        501, "This server has no such voice engine (GPT_TTS_ENGINE / GPT_STT_ENGINE=none, or espeak-ng not installed)."
    )
}
AUDIO: Responses = {
    200: {
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in MEDIA_TYPES.values()},
        "description": "The speech, as `format` asked (audio/wav by default)",
    }
}


def voice_service(runtime: Runtime) -> VoiceService:
    if runtime.voice is None:
        raise Disabled("voice is not available on this server", code="voice_disabled")
    return runtime.voice


def as_domain_error(exc: VoiceError) -> DomainError:
    """A voice failure as the domain error a client sees: disabled (engine missing), unavailable (busy or
    failed), or what is wrong with the request."""
    if isinstance(exc, EngineMissing):
        return Disabled(exc.message, code=exc.code)
    if isinstance(exc, InvalidAudio):
        kind = {413: TooLarge, 415: UnsupportedType}.get(exc.status, InvalidValue)
        return kind(exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, InvalidVoiceRequest):
        return InvalidValue(exc.message, param=exc.param, code=exc.code)
    return Unavailable(exc.message, code=exc.code, retry_after=1 if isinstance(exc, EngineBusy) else 5)


@contextlib.contextmanager
def voice_errors() -> Iterator[None]:
    try:
        yield
    except VoiceError as exc:
        raise as_domain_error(exc) from None


class VoiceOut(BaseModel):
    id: str = Field(description="What POST /synthesize takes as `voice`")
    name: str
    language: str


class VoicesOut(BaseModel):
    voices: list[VoiceOut] = Field(description="The default voice first")


class SynthesizeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="What to say")
    voice: str | None = Field(
        default=None,
        max_length=64,
        description="An id from GET /voices (espeak-ng: a language voice, optionally +variant, e.g. en-us+f2); "
        "default GPT_TTS_VOICE",
    )
    format: Literal["wav", "ogg", "mp3"] = Field(
        default="wav", description="wav always; ogg and mp3 only where the server has an encoder (else 422)"
    )
    speed: float = Field(default=1.0, ge=0.5, le=2.0, description="1.0 is about 150 words a minute")


class TranscriptOut(BaseModel):
    text: str = Field(description="What was recognised (lower case, no punctuation with PocketSphinx)")
    duration_s: float = Field(description="The audio's length in seconds")
    file_id: str | None = Field(description="The stored audio's file id when a conversation_id was given")


@router.get("/voices", responses=errors(503) | DISABLED)
async def voices(user: CurrentUser, runtime: RuntimeDep) -> VoicesOut:
    """The voices POST /synthesize can speak with."""
    with voice_errors():
        found = await voice_service(runtime).voices()
    return VoicesOut(voices=[VoiceOut(id=v.id, name=v.name, language=v.language) for v in found])


@router.post("/synthesize", response_class=Response, responses=AUDIO | errors(503) | DISABLED)
async def synthesize(body: SynthesizeIn, user: CurrentUser, runtime: RuntimeDep) -> Response:
    """Speech for `text`: audio bytes with their media type."""
    with voice_errors():
        speech = await voice_service(runtime).synthesize(body.text, body.voice, body.format, body.speed)
    return Response(
        content=speech.audio,
        media_type=speech.media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


@router.post("/transcribe", responses=errors(404, 415, 503) | DISABLED)
async def transcribe(
    user: CurrentUser,
    runtime: RuntimeDep,
    file: Annotated[
        UploadFile,
        File(
            description="PCM WAV (8- or 16-bit, mono or stereo, any sample rate), at most 10 MB and "
            "GPT_STT_MAX_SECONDS long",
            json_schema_extra={"minLength": 1},
        ),
    ],
    conversation_id: Annotated[
        str | None, Form(max_length=64, description="Keep the audio as a file of this conversation (yours)")
    ] = None,
) -> TranscriptOut:
    """The words spoken in a WAV recording. Bad audio answers 4xx and nothing is stored."""
    service = voice_service(runtime)
    limit = runtime.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"file exceeds {limit} bytes", param="file", code="file_too_large")
    with voice_errors():
        audio = service.check_audio(data)
    if conversation_id and await runtime.store.get_conversation(user.id, conversation_id) is None:
        raise NotFound("conversation not found", param="conversation_id", code="conversation_not_found")
    with voice_errors():
        transcript = await service.transcribe(audio)
    file_id = None
    if conversation_id:
        file_id = await runtime.files.put(
            data, "audio/wav", user.id, filename=_filename(file.filename), conversation_id=conversation_id
        )
    return TranscriptOut(text=transcript.text, duration_s=transcript.duration_s, file_id=file_id)
