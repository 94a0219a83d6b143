"""WAV parsing, resampling and espeak-ng's voice listing (gpt_runtime.voice): pure functions, no engines."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from gpt_runtime.services.filetypes import sniff_content_type
from gpt_runtime.voice.audio import fix_stream_sizes, parse_wav, resample, to_wav
from gpt_runtime.voice.base import InvalidAudio
from gpt_runtime.voice.espeak import parse_voice_list

pytestmark = pytest.mark.unit


def tone(freq: float, rate: int, seconds: float, amplitude: float = 10_000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def wav(pcm: bytes, *, rate: int = 16_000, channels: int = 1, bits: int = 16, tag: int = 1, extra=b"") -> bytes:
    """A WAV file by hand: `extra` chunks go between the format and the data."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_to_wav_round_trips_and_is_sniffed_as_wav():
    samples = tone(440, 16_000, 0.5)
    data = to_wav(samples, 16_000)
    assert sniff_content_type(data) == "audio/wav"
    audio = parse_wav(data, max_seconds=10)
    assert audio.sample_rate == 16_000 and audio.duration_s == 0.5
    assert np.array_equal(audio.samples, samples)


def test_eight_bit_stereo_becomes_sixteen_bit_mono():
    left = np.array([128, 255, 0, 128], dtype=np.uint8)
    right = np.array([128, 255, 0, 0], dtype=np.uint8)
    interleaved = np.stack([left, right], axis=1).ravel().tobytes()
    audio = parse_wav(wav(interleaved, rate=8_000, channels=2, bits=8), max_seconds=10)
    assert audio.samples.dtype == np.int16 and audio.sample_rate == 8_000
    assert audio.samples.tolist() == [0, 127 << 8, -128 << 8, -64 << 8]


def test_sixteen_bit_stereo_is_averaged():
    frames = np.array([[1000, 3000], [-2000, 0]], dtype="<i2").tobytes()
    assert parse_wav(wav(frames, channels=2), max_seconds=1).samples.tolist() == [2000, -1000]


def test_extensible_pcm_and_chunks_before_the_data_are_understood():
    pcm = tone(300, 22_050, 0.1).tobytes()
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # KSDATAFORMAT_SUBTYPE_PCM
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 22_050, 44_100, 2, 16, 22, 16, 4) + guid
    listing = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"  # odd size: one pad byte
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + listing + b"data" + struct.pack("<I", len(pcm)) + pcm
    audio = parse_wav(b"RIFF" + struct.pack("<I", len(body)) + body, max_seconds=1)
    assert audio.sample_rate == 22_050 and len(audio.samples) == len(pcm) // 2


def test_a_streamed_header_is_read_to_the_end_and_fixed():
    """espeak-ng --stdout (and ffmpeg to a pipe) write placeholder sizes: they cannot know the length yet."""
    pcm = tone(200, 22_050, 0.2).tobytes()
    streamed = bytearray(wav(pcm, rate=22_050))
    struct.pack_into("<I", streamed, 4, 0x7FFFF024)
    struct.pack_into("<I", streamed, 40, 0x7FFFF000)
    assert len(parse_wav(bytes(streamed), max_seconds=1).samples) == len(pcm) // 2
    fixed = fix_stream_sizes(bytes(streamed))
    assert fixed == wav(pcm, rate=22_050)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"ID3\x04" + bytes(64), 415, "unsupported_media_type"),  # MP3
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", 415, "unsupported_media_type"),
        (wav(struct.pack("<f", 0.5) * 8, bits=32, tag=3), 415, "unsupported_media_type"),  # IEEE float
        (wav(b"\x00" * 30, bits=24), 415, "unsupported_media_type"),
        (wav(b"\x00" * 12, channels=3), 415, "unsupported_media_type"),
        (wav(b"\x00\x00" * 10, rate=1_000), 422, "invalid_audio"),
        (wav(b"\x00\x00" * 100)[:-50], 422, "truncated_audio"),  # the data chunk cut short
        (wav(b"\x00\x00" * 100)[:30], 422, "truncated_audio"),  # the format chunk cut short
        (wav(b"\x00\x00" * 100)[:36], 422, "truncated_audio"),  # no data chunk at all
        (wav(b""), 422, "empty_audio"),
        (wav(b"\x00"), 422, "empty_audio"),  # half a frame
        (b"RIFF\x04\x00\x00\x00WAVE", 422, "invalid_audio"),  # no format chunk
        (wav(bytes(2 * 16_000 * 3)), 413, "audio_too_long"),  # 3 s, the cap is 2
    ],
)
def test_bad_audio_is_refused_with_a_status_and_code(data, status, code):
    with pytest.raises(InvalidAudio) as caught:
        parse_wav(data, max_seconds=2)
    assert (caught.value.status, caught.value.code, caught.value.param) == (status, code, "file")


@pytest.mark.parametrize(("rate", "target"), [(22_050, 16_000), (44_100, 16_000), (8_000, 16_000), (48_000, 16_000)])
def test_resampling_keeps_pitch_length_and_loudness(rate, target):
    samples = tone(440, rate, 1.0)
    out = resample(samples, rate, target)
    assert out.dtype == np.int16
    assert len(out) == target
    assert abs(peak_hz(out, target) - 440) <= 1
    assert abs(np.abs(out).max() - 10_000) < 300


def test_resampling_cuts_what_the_new_rate_cannot_hold():
    """A 9 kHz tone is above 16 kHz's Nyquist (8 kHz): naive resampling would fold it to 7 kHz; it is removed."""
    out = resample(tone(9_000, 22_050, 0.5) + tone(440, 22_050, 0.5, 1_000), 22_050, 16_000)
    assert abs(peak_hz(out, 16_000) - 440) <= 2


def test_resampling_at_the_same_rate_changes_nothing():
    samples = tone(100, 16_000, 0.1)
    assert resample(samples, 16_000, 16_000) is samples


def test_espeak_voice_listing_is_parsed():
    listing = """Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  af              --/M      Afrikaans          gmw/af
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
 5  variant         --/F      Alicia             !v/Alicia
"""
    assert parse_voice_list(listing) == [
        ("af", "Afrikaans", "gmw/af"),
        ("en-us", "English (America)", "gmw/en-US"),
        ("variant", "Alicia", "!v/Alicia"),
    ]


# engines by setting


def test_engines_are_chosen_by_name_none_or_a_python_factory():
    from gpt_runtime.settings import RuntimeSettings
    from gpt_runtime.voice.espeak import EspeakSynthesizer
    from gpt_runtime.voice.factory import open_recognizer, open_synthesizer
    from gpt_runtime.voice.sphinx import PocketSphinxRecognizer

    defaults = RuntimeSettings()
    assert isinstance(open_synthesizer(defaults), EspeakSynthesizer)
    assert isinstance(open_recognizer(defaults), PocketSphinxRecognizer)
    off = RuntimeSettings(tts_engine="none", stt_engine="none")
    assert open_synthesizer(off) is None and open_recognizer(off) is None
    plugged = RuntimeSettings(
        stt_engine="python:gpt_runtime.voice.sphinx:from_settings", voice_timeout_s=7, tts_voice="en-gb"
    )
    recognizer = open_recognizer(plugged)
    assert isinstance(recognizer, PocketSphinxRecognizer) and recognizer.timeout_s == 7


@pytest.mark.parametrize(
    "spec",
    [
        "whisper",
        "python:gpt_runtime.voice.sphinx",
        "python:gpt_runtime.voice.sphinx:no_such_factory",
        "python:gpt_runtime.voice.espeak:from_settings",  # a synthesizer is no recognizer
    ],
)
def test_a_wrong_engine_setting_stops_the_start(spec):
    from gpt_runtime.settings import RuntimeSettings
    from gpt_runtime.voice.factory import open_recognizer

    with pytest.raises(ValueError, match="GPT_STT_ENGINE"):
        open_recognizer(RuntimeSettings(stt_engine=spec))
