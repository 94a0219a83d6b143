"""Voice in and out: text to speech (espeak-ng) and speech to text (PocketSphinx) behind small interfaces
(base.py), chosen by GPT_TTS_ENGINE and GPT_STT_ENGINE (factory.py)."""

from gpt_runtime.voice.base import SpeechRecognizer, SpeechSynthesizer, Voice
from gpt_runtime.voice.service import Transcript, VoiceService

__all__ = ["SpeechRecognizer", "SpeechSynthesizer", "Transcript", "Voice", "VoiceService"]
