"""The voice service the routes share: the engines, a small bound on concurrent voice work, and the check that
turns an upload into PCM samples (the upload's type sniffing, then WAV parsing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gpt_runtime.services.filetypes import sniff_content_type
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.voice.audio import PcmAudio, parse_wav
from gpt_runtime.voice.base import (
    EngineBusy,
    EngineMissing,
    InvalidAudio,
    Speech,
    SpeechRecognizer,
    SpeechSynthesizer,
    Voice,
)
from gpt_runtime.voice.factory import open_recognizer, open_synthesizer

log = logging.getLogger("gpt_runtime.voice")


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float


class VoiceService:
    def __init__(
        self,
        synthesizer: SpeechSynthesizer | None,
        recognizer: SpeechRecognizer | None,
        *,
        max_concurrent: int = 2,
        wait_s: float = 30.0,
        max_audio_s: float = 120.0,
    ):
        self.synthesizer = synthesizer
        self.recognizer = recognizer
        self.wait_s = wait_s
        self.max_audio_s = max_audio_s
        self._slots = asyncio.Semaphore(max_concurrent)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> VoiceService:
        return cls(
            open_synthesizer(settings),
            open_recognizer(settings),
            max_concurrent=settings.voice_max_concurrent,
            wait_s=settings.queue_timeout_s,
            max_audio_s=settings.stt_max_seconds,
        )

    async def start(self) -> None:
        """Read the voice list once (a wrong GPT_TTS_VOICE stops the start); a missing tool only logs."""
        if self.synthesizer is None:
            return
        try:
            await self.synthesizer.voices()
        except EngineMissing as exc:
            log.warning("%s: POST /synthesize answers 501", exc.message)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            raise EngineBusy("the voice engines are busy: try again shortly") from None
        try:
            yield
        finally:
            self._slots.release()

    def _tts(self) -> SpeechSynthesizer:
        if self.synthesizer is None:
            raise EngineMissing(
                "speech synthesis is disabled on this server (GPT_TTS_ENGINE=none)", code="tts_disabled"
            )
        return self.synthesizer

    def _stt(self) -> SpeechRecognizer:
        if self.recognizer is None:
            raise EngineMissing(
                "speech recognition is disabled on this server (GPT_STT_ENGINE=none)", code="stt_disabled"
            )
        return self.recognizer

    async def voices(self) -> list[Voice]:
        return await self._tts().voices()

    async def synthesize(self, text: str, voice: str | None, format: str, speed: float) -> Speech:
        synthesizer = self._tts()
        async with self._slot():
            return await synthesizer.synthesize(text, voice, format, speed)

    def check_audio(self, data: bytes) -> PcmAudio:
        """The upload's samples; InvalidAudio for anything but PCM WAV of a sane length (nothing is stored)."""
        self._stt()  # disabled answers 501 before the upload is judged
        if not data:
            raise InvalidAudio("the file is empty", code="empty_file")
        kind = sniff_content_type(data)
        if kind != "audio/wav":
            raise InvalidAudio(
                f"unsupported audio type {kind or 'unknown'}: only PCM WAV can be transcribed",
                code="unsupported_media_type",
                status=415,
            )
        return parse_wav(data, max_seconds=self.max_audio_s)

    async def transcribe(self, audio: PcmAudio) -> Transcript:
        recognizer = self._stt()
        async with self._slot():
            text = await recognizer.transcribe(audio.samples.astype("<i2").tobytes(), audio.sample_rate)
        return Transcript(text=text.strip(), duration_s=round(audio.duration_s, 3))
