"""WAV in and out: parse RIFF/WAVE PCM (8 or 16 bit, mono or stereo, any rate) into 16-bit mono samples,
resample with numpy (band-limited, by FFT), and write WAV. Pure functions; errors are InvalidAudio."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from gpt_runtime.voice.base import InvalidAudio

MIN_RATE, MAX_RATE = 4_000, 192_000
# Streaming writers (espeak-ng --stdout, ffmpeg to a pipe) cannot know the length when they write the header:
# a data size at least this large in the last chunk means "to the end of the file".
_STREAMING_SIZE = 0x7FFF0000
_PCM = 1
_EXTENSIBLE = 0xFFFE
_PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


@dataclass(frozen=True)
class PcmAudio:
    samples: np.ndarray  # int16, mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def _bad(message: str, code: str = "invalid_audio", status: int = 422) -> InvalidAudio:
    return InvalidAudio(message, code=code, status=status)


def _chunks(data: bytes) -> dict[bytes, bytes]:
    """The RIFF chunks by id (first of each), checked against the bytes there are."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _bad("not a WAV file (RIFF/WAVE): only PCM WAV audio can be transcribed", "unsupported_media_type", 415)
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if start + size > len(data):
            if chunk_id == b"data" and size >= _STREAMING_SIZE:
                size = len(data) - start
            else:
                name = chunk_id.decode("latin-1").strip()
                raise _bad(f"truncated WAV: the '{name}' chunk is cut short", "truncated_audio")
        chunks.setdefault(chunk_id, data[start : start + size])
        if chunk_id == b"data":
            break  # what follows the samples is of no use here
        pos = start + size + (size & 1)  # chunks are word-aligned
    return chunks


def parse_wav(data: bytes, *, max_seconds: float) -> PcmAudio:
    """16-bit mono samples from PCM WAV bytes; InvalidAudio (415, 413 or 422) for anything else."""
    chunks = _chunks(data)
    fmt = chunks.get(b"fmt ")
    if fmt is None or len(fmt) < 16:
        raise _bad("WAV without a valid format chunk", "invalid_audio")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 40 and fmt[26:40] == _PCM_GUID_TAIL and fmt[24:26] == b"\x01\x00":
        tag = _PCM
    if tag != _PCM:
        raise _bad("only uncompressed PCM WAV can be transcribed", "unsupported_media_type", 415)
    if bits not in (8, 16) or channels not in (1, 2) or block_align != channels * bits // 8:
        raise _bad("WAV must be 8- or 16-bit PCM, mono or stereo", "unsupported_media_type", 415)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise _bad(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}", "invalid_audio")
    pcm = chunks.get(b"data")
    if pcm is None:
        raise _bad("WAV without a data chunk", "truncated_audio")
    frames = len(pcm) // block_align
    if frames == 0:
        raise _bad("the audio is empty", "empty_audio")
    if frames / rate > max_seconds:
        raise _bad(f"the audio is longer than {max_seconds:g} s", "audio_too_long", 413)
    pcm = pcm[: frames * block_align]
    if bits == 8:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.int32) - 128) << 8
    else:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    if channels == 2:
        samples = (samples[0::2] + samples[1::2]) // 2
    return PcmAudio(samples.astype(np.int16), rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """int16 samples at `rate` -> int16 at `target`, band-limited (the spectrum cut or zero-padded)."""
    if rate == target or len(samples) == 0:
        return samples.astype(np.int16, copy=False)
    n_in = len(samples)
    n_out = max(1, round(n_in * target / rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    resampled = np.fft.irfft(out, n_out) * (n_out / n_in)
    return np.clip(np.round(resampled), -32768, 32767).astype(np.int16)


def to_wav(samples: np.ndarray, rate: int) -> bytes:
    """A 16-bit mono PCM WAV file."""
    pcm = samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", _PCM, 1, rate, rate * 2, 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


def fix_stream_sizes(data: bytes) -> bytes:
    """A streamed WAV (placeholder sizes in its header) with the real RIFF and data sizes written in."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    out = bytearray(data)
    pos = 12
    while pos + 8 <= len(out):
        chunk_id, size = out[pos : pos + 4], struct.unpack_from("<I", out, pos + 4)[0]
        if chunk_id == b"data":
            struct.pack_into("<I", out, pos + 4, min(size, len(out) - pos - 8))
            break
        pos += 8 + size + (size & 1)
    struct.pack_into("<I", out, 4, len(out) - 8)
    return bytes(out)
