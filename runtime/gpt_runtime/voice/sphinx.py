"""Speech to text with PocketSphinx 5 and the en-US acoustic model, dictionary and language model its wheel ships.

A Decoder is not thread-safe: each call takes one from a pool (made on first need, at most as many as calls run
at once) and decodes the whole utterance in a worker thread. Decoding cannot be interrupted, so its time is bounded
by the audio's (GPT_STT_MAX_SECONDS); a caller that gives up still waits for its thread, so the concurrency bound
holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from typing import Any

import numpy as np

from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.voice.audio import resample
from gpt_runtime.voice.base import EngineFailed, EngineMissing

RATE = 16_000  # what the bundled acoustic model was trained on


class _Stopped(Exception):
    pass


class PocketSphinxRecognizer:
    def __init__(self, *, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @staticmethod
    def _new_decoder() -> Any:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise EngineMissing("speech recognition is not available: pocketsphinx is not installed") from exc
        return Decoder(loglevel="FATAL")  # the bundled en-US model; no log lines about user audio

    def _decode(self, pcm16: bytes, sample_rate: int, stop: threading.Event, deadline: float) -> str:
        samples = resample(np.frombuffer(pcm16, dtype="<i2"), sample_rate, RATE)
        # silence either side gives the decoder's noise and mean estimates something to start from
        pad = np.zeros(RATE // 4, dtype=np.int16)
        audio = np.concatenate([pad, samples, pad]).astype("<i2").tobytes()
        try:
            decoder = self._pool.get_nowait()
        except queue.Empty:
            decoder = self._new_decoder()
        try:
            if stop.is_set() or time.monotonic() > deadline:
                raise _Stopped
            decoder.start_utt()
            try:
                # the whole utterance at once: batch cepstral mean normalisation, far better than live (measured)
                decoder.process_raw(audio, False, True)
            finally:
                decoder.end_utt()
            hypothesis = decoder.hyp()
            return hypothesis.hypstr if hypothesis is not None else ""
        finally:
            self._pool.put(decoder)

    async def transcribe(self, pcm16: bytes, sample_rate: int) -> str:
        """Resampling and decoding run in a worker thread."""
        stop = threading.Event()
        deadline = time.monotonic() + self.timeout_s
        work = asyncio.ensure_future(asyncio.to_thread(self._decode, pcm16, sample_rate, stop, deadline))
        try:
            return await asyncio.shield(work)
        except _Stopped:
            raise EngineFailed(
                f"speech recognition took longer than {self.timeout_s:g} s", code="voice_timeout"
            ) from None
        except asyncio.CancelledError:
            stop.set()  # the caller is gone: a decode not yet begun never starts; one running is waited for
            with contextlib.suppress(BaseException):
                await work
            raise


def from_settings(settings: RuntimeSettings) -> PocketSphinxRecognizer:
    """GPT_STT_ENGINE=pocketsphinx (the same as python:gpt_runtime.voice.sphinx:from_settings)."""
    return PocketSphinxRecognizer(timeout_s=settings.voice_timeout_s)
