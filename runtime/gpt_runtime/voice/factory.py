"""Engines by setting: GPT_TTS_ENGINE (`espeak-ng`, `none`) and GPT_STT_ENGINE (`pocketsphinx`, `none`), or
`python:package.module:factory` for another implementation: `factory(settings)` is called once at start and
returns an object with SpeechSynthesizer's or SpeechRecognizer's methods (voice/base.py). `none` turns the
routes off (501)."""

from __future__ import annotations

import importlib
from typing import Any

from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.voice.base import SpeechRecognizer, SpeechSynthesizer


def _plugin(spec: str, setting: str, protocol: type, settings: RuntimeSettings) -> Any:
    module_name, _, attribute = spec.removeprefix("python:").partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{setting}={spec!r}: expected python:package.module:factory")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"{setting}={spec!r}: {module_name} has no callable {attribute!r}")
    engine = factory(settings)
    if not isinstance(engine, protocol):
        raise ValueError(f"{setting}={spec!r}: the factory returned no {protocol.__name__}")
    return engine


def open_synthesizer(settings: RuntimeSettings) -> SpeechSynthesizer | None:
    name = settings.tts_engine.strip()
    if name == "none":
        return None
    if name == "espeak-ng":
        name = "python:gpt_runtime.voice.espeak:from_settings"
    if name.startswith("python:"):
        return _plugin(name, "GPT_TTS_ENGINE", SpeechSynthesizer, settings)
    raise ValueError(f"GPT_TTS_ENGINE={name!r}: expected espeak-ng, none or python:package.module:factory")


def open_recognizer(settings: RuntimeSettings) -> SpeechRecognizer | None:
    name = settings.stt_engine.strip()
    if name == "none":
        return None
    if name == "pocketsphinx":
        name = "python:gpt_runtime.voice.sphinx:from_settings"
    if name.startswith("python:"):
        return _plugin(name, "GPT_STT_ENGINE", SpeechRecognizer, settings)
    raise ValueError(f"GPT_STT_ENGINE={name!r}: expected pocketsphinx, none or python:package.module:factory")
