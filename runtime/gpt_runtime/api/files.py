"""File routes: POST /upload (multipart, size-limited, type sniffed from the bytes), GET/DELETE /files/{id}.

The FileStore comes from `runtime.files` when the app built one, else it is opened once from
`settings.resolved_files_url` on first use.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from pydantic import BaseModel

from gpt_runtime.api.responses import errors
from gpt_runtime.backends.files import FileMeta, FileStore
from gpt_runtime.deps import CurrentUser, RuntimeDep
from gpt_runtime.domain_errors import InvalidValue, NotFound, TooLarge, UnsupportedType
from gpt_runtime.schemas import iso
from gpt_runtime.services.filetypes import sniff_content_type

router = APIRouter(tags=["files"])

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
ALLOWED = "JPEG, PNG, GIF, WebP, PDF, MP3, WAV, OGG, JSON or plain text"
# what sniff_content_type can answer, so what a download's Content-Type can be
STORED_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "audio/mpeg",
    "audio/wav",
    "audio/ogg",
    "application/json",
    "text/plain",
)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class FileOut(BaseModel):
    id: str
    object: str = "file"
    filename: str | None
    content_type: str
    bytes: int
    sha256: str
    conversation_id: str | None
    created_at: str

    @classmethod
    def of(cls, meta: FileMeta) -> FileOut:
        return cls(
            id=meta.id,
            filename=meta.filename,
            content_type=meta.content_type,
            bytes=meta.size,
            sha256=meta.sha256,
            conversation_id=meta.conversation_id,
            created_at=iso(meta.created_at),
        )


async def get_file_store(runtime: RuntimeDep) -> FileStore:
    return runtime.files


Files = Annotated[FileStore, Depends(get_file_store)]


def _filename(name: str | None) -> str | None:
    if not name:
        return None
    name = _UNSAFE_NAME.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:255] or None


def _not_found() -> NotFound:
    return NotFound("file not found", param="file_id", code="file_not_found")


@router.post("/upload", status_code=status.HTTP_201_CREATED, responses=errors(404, 415))
async def upload(
    user: CurrentUser,
    runtime: RuntimeDep,
    files: Files,
    file: Annotated[
        UploadFile,
        File(description="The file, not empty: at most 10 MB of " + ALLOWED, json_schema_extra={"minLength": 1}),
    ],
    conversation_id: Annotated[str | None, Form(max_length=64)] = None,
) -> FileOut:
    """Store a file for the caller. Its type comes from its bytes; the client's Content-Type is ignored."""
    limit = runtime.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"file exceeds {limit} bytes", param="file", code="file_too_large")
    if not data:
        raise InvalidValue("file is empty", param="file", code="empty_file")
    content_type = sniff_content_type(data)
    if content_type is None:
        raise UnsupportedType(f"unsupported file type: upload {ALLOWED}", param="file", code="unsupported_media_type")
    if conversation_id and await runtime.store.get_conversation(user.id, conversation_id) is None:
        raise NotFound("conversation not found", param="conversation_id", code="conversation_not_found")
    file_id = await files.put(
        data, content_type, user.id, filename=_filename(file.filename), conversation_id=conversation_id or None
    )
    meta = await files.stat(user.id, file_id)
    if meta is None:
        raise RuntimeError("the file store lost a file it just wrote")
    return FileOut.of(meta)


@router.get(
    "/files/{file_id}",
    response_class=Response,
    responses={
        200: {"content": {t: {"schema": {"type": "string"}} for t in STORED_TYPES}, "description": "The file's bytes"},
        **errors(404),
    },
)
async def download(file_id: str, user: CurrentUser, files: Files) -> Response:
    """The caller's file, with the type sniffed at upload. Anyone else's id answers 404."""
    found = await files.get(user.id, file_id)
    if found is None:
        raise _not_found()
    data, meta = found
    disposition = "attachment"
    if meta.filename:
        disposition += f"; filename*=UTF-8''{quote(meta.filename, safe='')}"
    return Response(
        content=data,
        media_type=meta.content_type,
        headers={
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{meta.sha256}"',
            "Cache-Control": "private, max-age=0",
        },
    )


@router.delete("/files/{file_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def delete(file_id: str, user: CurrentUser, files: Files) -> Response:
    if not await files.delete(user.id, file_id):
        raise _not_found()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
