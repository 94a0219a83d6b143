"""Text to speech with espeak-ng (Debian's `espeak-ng`): WAV always, Ogg Vorbis with `oggenc` and MP3 with `lame`
when they are on PATH.

The text goes to espeak-ng on stdin (never in argv); the voice is checked against `espeak-ng --voices` first, so
nothing the client sends becomes an option. Voices are the language voices (`en-us`), optionally with one of
espeak-ng's variants (`en-us+f2`, from `espeak-ng --voices=variant`).
"""

from __future__ import annotations

import re
import shutil

from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.voice.audio import fix_stream_sizes
from gpt_runtime.voice.base import MEDIA_TYPES, EngineMissing, InvalidVoiceRequest, Speech, Voice
from gpt_runtime.voice.proc import run_tool

BASE_WPM = 150  # speed 1.0, in words per minute (espeak-ng's own default, 175, is recognised less well)
MIN_WPM, MAX_WPM = 80, 450  # what espeak-ng accepts
_VOICE_ID = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,12}){0,4}(?:\+([A-Za-z0-9_]{1,32}))?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# format -> the encoder that turns espeak-ng's WAV (stdin) into it (stdout)
ENCODERS = {"ogg": ["oggenc", "--quiet", "-o", "-", "-"], "mp3": ["lame", "--quiet", "-", "-"]}


def parse_voice_list(listing: str) -> list[tuple[str, str, str]]:
    """(language, name, file) rows of `espeak-ng --voices` (or `--voices=variant`) output."""
    rows = []
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[0].isdigit():
            rows.append((parts[1], parts[3].replace("_", " "), parts[4]))
    return rows


class EspeakSynthesizer:
    """espeak-ng in a subprocess per request; the voice list is read once."""

    def __init__(
        self,
        *,
        default_voice: str = "en-us+f2",
        binary: str = "espeak-ng",
        timeout_s: float = 30.0,
        max_output_bytes: int = 64 * 1024 * 1024,
    ):
        self.default_voice = default_voice
        self.binary = binary
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self._voices: list[Voice] | None = None
        self._variants: set[str] = set()

    def _executable(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise EngineMissing(
                f"speech synthesis is not available: {self.binary} is not installed on this server (not on PATH)"
            )
        return path

    async def _list(self, argument: str) -> str:
        out = await run_tool([self._executable(), argument], None, timeout_s=self.timeout_s, max_output=4 * 1024 * 1024)
        return out.decode("utf-8", "replace")

    async def voices(self) -> list[Voice]:
        """The language voices, the default voice first."""
        if self._voices is None:
            rows = parse_voice_list(await self._list("--voices"))
            variants = {
                file.rsplit("/", 1)[-1] for _, _, file in parse_voice_list(await self._list("--voices=variant"))
            }
            # one per language (espeak-ng lists a few languages twice; `-v LANG` picks the first)
            first: dict[str, Voice] = {}
            for lang, name, _ in rows:
                first.setdefault(lang, Voice(id=lang, name=name, language=lang))
            voices = list(first.values())
            default = self._default(voices, variants)
            self._variants = variants
            self._voices = [default, *(v for v in voices if v.id != default.id)]
        return self._voices

    def _default(self, voices: list[Voice], variants: set[str]) -> Voice:
        base, _, variant = self.default_voice.partition("+")
        known = {v.id: v for v in voices}
        if base not in known or (variant and variant not in variants):
            raise ValueError(f"GPT_TTS_VOICE={self.default_voice!r} is not one of espeak-ng's voices")
        found = known[base]
        if not variant:
            return found
        return Voice(id=self.default_voice, name=f"{found.name} ({variant})", language=found.language)

    async def formats(self) -> tuple[str, ...]:
        return ("wav", *(fmt for fmt, argv in ENCODERS.items() if shutil.which(argv[0])))

    async def _check_voice(self, voice: str) -> None:
        match = _VOICE_ID.match(voice)
        ids = {v.id for v in await self.voices()}
        if match is None or voice.partition("+")[0] not in ids or (match[1] and match[1] not in self._variants):
            raise InvalidVoiceRequest(
                "unknown voice: pick an id from GET /voices (a language voice may take an espeak-ng variant, "
                "e.g. en-us+f2)",
                code="unknown_voice",
                param="voice",
            )

    async def synthesize(self, text: str, voice: str | None, format: str, speed: float = 1.0) -> Speech:
        voice = voice or self.default_voice
        await self._check_voice(voice)
        formats = await self.formats()
        if format not in formats:
            raise InvalidVoiceRequest(
                f"format {format!r} is not available on this server; supported: {', '.join(formats)}",
                code="unsupported_format",
                param="format",
            )
        wpm = min(MAX_WPM, max(MIN_WPM, round(BASE_WPM * speed)))
        spoken = _CONTROL.sub(" ", text).encode("utf-8", "replace")
        argv = [self._executable(), "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)]
        wav = fix_stream_sizes(await run_tool(argv, spoken, timeout_s=self.timeout_s, max_output=self.max_output_bytes))
        if format == "wav":
            return Speech(wav, MEDIA_TYPES["wav"])
        encoder = ENCODERS[format]
        path = shutil.which(encoder[0]) or encoder[0]
        encoded = await run_tool([path, *encoder[1:]], wav, timeout_s=self.timeout_s, max_output=self.max_output_bytes)
        return Speech(encoded, MEDIA_TYPES[format])


def from_settings(settings: RuntimeSettings) -> EspeakSynthesizer:
    """GPT_TTS_ENGINE=espeak-ng (the same as python:gpt_runtime.voice.espeak:from_settings)."""
    return EspeakSynthesizer(default_voice=settings.tts_voice, timeout_s=settings.voice_timeout_s)
