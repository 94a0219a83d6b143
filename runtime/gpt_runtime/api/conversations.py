"""Conversation routes; every lookup is scoped to the caller, so others' ids answer 404."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from gpt_runtime.api.responses import errors
from gpt_runtime.deps import CurrentUser, RuntimeDep
from gpt_runtime.domain_errors import InvalidInput, NotFound
from gpt_runtime.read_cache import cached_read
from gpt_runtime.schemas import (
    ConversationDetailOut,
    ConversationIn,
    ConversationOut,
    ConversationPageOut,
    MessageOut,
    TitleIn,
)
from gpt_runtime.services.export import export_json, export_pdf
from gpt_runtime.storage.base import InvalidCursor

router = APIRouter(prefix="/conversations", tags=["conversations"])


def _not_found() -> NotFound:
    return NotFound("conversation not found", param="conversation_id", code="conversation_not_found")


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    user: CurrentUser, runtime: RuntimeDep, body: ConversationIn | None = None
) -> ConversationOut:
    title = body.title if body else ConversationIn().title
    conversation = await runtime.store.create_conversation(user.id, title)
    await runtime.cache.invalidate_user(user.id)
    return ConversationOut.of(conversation)


@router.get("", responses=errors(400), openapi_extra=cached_read("list"))
async def list_conversations(
    user: CurrentUser,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    updated_since: Annotated[
        datetime | None, Query(description="ISO 8601; only conversations changed after it")
    ] = None,
) -> ConversationPageOut:
    since = _to_us(updated_since) if updated_since else None
    try:
        page = await runtime.store.list_conversations(user.id, limit=limit, cursor=cursor, updated_since=since)
    except InvalidCursor as exc:
        raise InvalidInput("cursor is not valid", param="cursor", code="invalid_cursor") from exc
    return ConversationPageOut(items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.get("/{conversation_id}", responses=errors(404), openapi_extra=cached_read("conversation"))
async def get_conversation(conversation_id: str, user: CurrentUser, runtime: RuntimeDep) -> ConversationDetailOut:
    """A conversation with its messages (reads are cached by gpt_runtime.read_cache)."""
    conversation = await runtime.store.get_conversation(user.id, conversation_id)
    messages = await runtime.store.list_messages(user.id, conversation_id) if conversation else None
    if conversation is None or messages is None:
        raise _not_found()
    return ConversationDetailOut(
        **ConversationOut.of(conversation).model_dump(), messages=[MessageOut.of(m) for m in messages]
    )


@router.put("/{conversation_id}/title", responses=errors(404))
async def rename_conversation(
    conversation_id: str, body: TitleIn, user: CurrentUser, runtime: RuntimeDep
) -> ConversationOut:
    conversation = await runtime.store.rename_conversation(user.id, conversation_id, body.title)
    if conversation is None:
        raise _not_found()
    await runtime.cache.invalidate_user(user.id)
    return ConversationOut.of(conversation)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def delete_conversation(conversation_id: str, user: CurrentUser, runtime: RuntimeDep) -> Response:
    if not await runtime.store.delete_conversation(user.id, conversation_id):
        raise _not_found()
    await runtime.cache.invalidate_user(user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{conversation_id}/export",
    responses={200: {"content": {"application/json": {}, "application/pdf": {}}}, **errors(404)},
)
async def export_conversation(
    conversation_id: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    format: Annotated[Literal["json", "pdf"], Query(description="json or pdf")] = "json",
) -> Response:
    """Download a conversation as a JSON document or a PDF transcript."""
    conversation = await runtime.store.get_conversation(user.id, conversation_id)
    messages = await runtime.store.list_messages(user.id, conversation_id) if conversation else None
    if conversation is None or messages is None:
        raise _not_found()
    if format == "pdf":
        body = await asyncio.to_thread(export_pdf, conversation, messages)
        media_type = "application/pdf"
    else:
        body, media_type = export_json(conversation, messages), "application/json"
    filename = f"conversation-{conversation.id}.{format}"
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
