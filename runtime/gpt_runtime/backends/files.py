"""User files: the FileStore protocol and local files; bytes plus the content type the caller gives.

backends/factory.py picks a backend by URL: ``file:///abs/path`` (the embedded default: one folder per owner, bytes
plus a JSON sidecar) or ``s3://bucket/prefix?region=REGION&endpoint_url=URL`` (backends/s3.py; region and endpoint
are optional and otherwise come from boto3's chain, AWS_ENDPOINT_URL included). The type is sniffed before a put,
at the edge (services/filetypes.py).

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
