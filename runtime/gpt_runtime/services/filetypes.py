"""Content sniffing at the edge: a file's type comes from its bytes, never from the client's header.

The API and the services decide a file's type here; the file stores keep bytes plus the type they are given.
"""

from __future__ import annotations

import json
import re

_BINARY_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # text allows tab, newlines, form feed


def _is_mp3(head: bytes) -> bool:
    if head.startswith(b"ID3"):
        return True
    # an MPEG audio frame header: 11 sync bits, a valid version, layer III
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and (head[1] & 0xE0) == 0xE0
        and (head[1] & 0x18) != 0x08
        and (head[1] & 0x06) == 0x02
    )


def _text(data: bytes) -> str | None:
    if _BINARY_CONTROL.search(data):
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def sniff_content_type(data: bytes) -> str | None:
    """The media type the bytes are (JPEG, PNG, GIF, WebP, PDF, MP3, WAV, OGG, JSON, text), or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if _is_mp3(head):
        return "audio/mpeg"
    text = _text(data)
    if text is None:
        return None
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(stripped)
            return "application/json"
        except ValueError:
            pass
    return "text/plain"
