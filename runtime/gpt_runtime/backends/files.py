"""User files: the FileStore protocol, local files, content sniffing, and the URL that picks a backend.

URLs: ``file:///abs/path`` (the embedded default: one folder per owner, bytes plus a JSON sidecar) or
``s3://bucket/prefix?region=REGION&endpoint_url=URL`` (backends/s3.py; region and endpoint are optional and
otherwise come from boto3's chain, AWS_ENDPOINT_URL included).

Every read and delete is scoped by owner: another owner's id is simply not found.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

_FILE_ID = re.compile(r"^[0-9a-f]{32}$")
_SAFE_OWNER = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class FileMeta:
    id: str
    owner: str
    content_type: str
    size: int
    sha256: str
    filename: str | None
    conversation_id: str | None
    created_at: int  # microseconds since the epoch, UTC


class FileStore(Protocol):
    """Bytes with metadata, owned by one user."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def put(
        self,
        data: bytes,
        content_type: str,
        owner: str,
        *,
        filename: str | None = None,
        conversation_id: str | None = None,
    ) -> str: ...
    async def get(self, owner: str, file_id: str) -> tuple[bytes, FileMeta] | None: ...
    async def stat(self, owner: str, file_id: str) -> FileMeta | None: ...
    async def delete(self, owner: str, file_id: str) -> bool: ...


def new_meta(data: bytes, content_type: str, owner: str, filename: str | None, conversation_id: str | None) -> FileMeta:
    """Metadata for a new file with a fresh id."""
    return FileMeta(
        id=uuid.uuid4().hex,
        owner=owner,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        filename=filename,
        conversation_id=conversation_id,
        created_at=time.time_ns() // 1000,
    )


def is_file_id(file_id: str) -> bool:
    """Ids are 32 lower-case hex digits; anything else is never looked up (no path tricks)."""
    return bool(_FILE_ID.match(file_id))


def owner_key(owner: str) -> str:
    """A path segment for the owner: the id itself when it is plain, else a digest of it."""
    return owner if _SAFE_OWNER.match(owner) else hashlib.sha256(owner.encode()).hexdigest()


class LocalFileStore:
    """Files under one folder: <root>/<owner>/<id> and <id>.json beside it; writes are atomic renames."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)

    def _paths(self, owner: str, file_id: str) -> tuple[Path, Path]:
        folder = self.root / owner_key(owner)
        return folder / file_id, folder / f"{file_id}.json"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(
        self,
        data: bytes,
        content_type: str,
        owner: str,
        *,
        filename: str | None = None,
        conversation_id: str | None = None,
    ) -> str:
        meta = new_meta(data, content_type, owner, filename, conversation_id)
        data_path, meta_path = self._paths(owner, meta.id)

        def write() -> None:
            self._write(data_path, data)
            self._write(meta_path, json.dumps(asdict(meta)).encode())  # the sidecar last: it marks the file done

        await asyncio.to_thread(write)
        return meta.id

    async def get(self, owner: str, file_id: str) -> tuple[bytes, FileMeta] | None:
        if not is_file_id(file_id):
            return None
        data_path, meta_path = self._paths(owner, file_id)

        def read() -> tuple[bytes, FileMeta] | None:
            try:
                meta = FileMeta(**json.loads(meta_path.read_bytes()))
                return data_path.read_bytes(), meta
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def stat(self, owner: str, file_id: str) -> FileMeta | None:
        if not is_file_id(file_id):
            return None
        _, meta_path = self._paths(owner, file_id)

        def read() -> FileMeta | None:
            try:
                return FileMeta(**json.loads(meta_path.read_bytes()))
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def delete(self, owner: str, file_id: str) -> bool:
        if not is_file_id(file_id):
            return False
        data_path, meta_path = self._paths(owner, file_id)

        def remove() -> bool:
            existed = meta_path.exists()
            meta_path.unlink(missing_ok=True)
            data_path.unlink(missing_ok=True)
            return existed

        return await asyncio.to_thread(remove)


def open_file_store(url: str) -> FileStore:
    """file:///abs/path or s3://bucket/prefix?region=..&endpoint_url=.."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"file store URL must be file:///absolute/path, got {url!r}")
        return LocalFileStore(parts.path)
    if scheme == "s3":
        from gpt_runtime.backends.s3 import S3FileStore

        return S3FileStore.from_url(url)
    raise ValueError(f"unsupported files URL scheme: {scheme!r}")


# content sniffing: the type comes from the bytes, never from the client's header

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
