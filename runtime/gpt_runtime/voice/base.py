"""The engine interfaces behind /synthesize and /transcribe, the Voice record, and the voice errors.

A deployment plugs in another engine (Whisper, a cloud API) by naming a factory in GPT_TTS_ENGINE or
GPT_STT_ENGINE (`python:package.module:factory`, see voice/factory.py): any object with these methods will do.
Engines raise the errors below; the routes turn them into JSON answers (api/voice.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MEDIA_TYPES = {"wav": "audio/wav", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


@dataclass(frozen=True)
class Voice:
    id: str  # what `voice` takes in POST /synthesize
    name: str
    language: str


@dataclass(frozen=True)
class Speech:
    audio: bytes
    media_type: str


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """Text to speech. `formats` are the audio formats it can return ("wav" at least)."""

    async def voices(self) -> list[Voice]: ...
    async def formats(self) -> tuple[str, ...]: ...
    async def synthesize(self, text: str, voice: str | None, format: str, speed: float = 1.0) -> Speech: ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    """Speech to text from 16-bit signed mono PCM (little-endian) at any sample rate."""

    async def transcribe(self, pcm16: bytes, sample_rate: int) -> str: ...


class VoiceError(Exception):
    """A voice failure a client should see; `code` is the error body's code."""

    code = "voice_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.param = param


class EngineMissing(VoiceError):
    """The engine cannot run here (a tool not installed, a library missing): 501."""

    code = "voice_engine_missing"


class EngineFailed(VoiceError):
    """The engine failed or ran past its time on valid input: 503."""

    code = "voice_engine_failed"


class InvalidVoiceRequest(VoiceError):
    """A field the engine cannot honour (unknown voice, unsupported format): 422 naming the field."""

    code = "invalid_value"


class InvalidAudio(VoiceError):
    """Audio that cannot be transcribed: 415 (not WAV/PCM), 413 (too long) or 422 (broken, empty)."""

    code = "invalid_audio"

    def __init__(self, message: str, *, code: str, status: int = 422):
        super().__init__(message, code=code, param="file")
        self.status = status


class EngineBusy(VoiceError):
    """Every voice slot stayed taken for the wait allowed: 503 with Retry-After."""

    code = "overloaded"
