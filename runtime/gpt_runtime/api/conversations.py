"""Conversation routes; every lookup is scoped to the caller, so others' ids answer 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from gpt_runtime.deps import CurrentUser, Runtime, RuntimeDep
from gpt_runtime.errors import BadRequest, NotFound
from gpt_runtime.schemas import (
    ConversationDetailOut,
    ConversationIn,
    ConversationOut,
    ConversationPageOut,
    MessageOut,
    TitleIn,
)
from gpt_runtime.storage.base import InvalidCursor

router = APIRouter(prefix="/conversations", tags=["conversations"])


def _not_found() -> NotFound:
    return NotFound("conversation not found", param="conversation_id", code="conversation_not_found")


async def _cached_json(runtime: Runtime, key: str, out: BaseModel) -> Response:
    """Serialize once, cache the bytes, and serve the same bytes on every hit."""
    body = out.model_dump_json().encode()
    await runtime.cache.set_raw(key, body, runtime.settings.cache_list_ttl_s)
    return Response(body, media_type="application/json")


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


@router.get("", response_model=ConversationPageOut)
async def list_conversations(
    user: CurrentUser,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    updated_since: Annotated[
        datetime | None, Query(description="ISO 8601; only conversations changed after it")
    ] = None,
) -> Response:
    since = _to_us(updated_since) if updated_since else None
    key = await runtime.cache.user_namespace(user.id) + f"list:{limit}:{cursor}:{since}"
    cached = await runtime.cache.get_raw("list", key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    try:
        page = await runtime.store.list_conversations(user.id, limit=limit, cursor=cursor, updated_since=since)
    except InvalidCursor as exc:
        raise BadRequest("cursor is not valid", param="cursor", code="invalid_cursor") from exc
    out = ConversationPageOut(items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor)
    return await _cached_json(runtime, key, out)


@router.get("/{conversation_id}", response_model=ConversationDetailOut)
async def get_conversation(conversation_id: str, user: CurrentUser, runtime: RuntimeDep) -> Response:
    key = await runtime.cache.user_namespace(user.id) + f"detail:{conversation_id}"
    cached = await runtime.cache.get_raw("conversation", key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    conversation = await runtime.store.get_conversation(user.id, conversation_id)
    messages = await runtime.store.list_messages(user.id, conversation_id) if conversation else None
    if conversation is None or messages is None:
        raise _not_found()
    out = ConversationDetailOut(
        **ConversationOut.of(conversation).model_dump(), messages=[MessageOut.of(m) for m in messages]
    )
    return await _cached_json(runtime, key, out)


@router.put("/{conversation_id}/title")
async def rename_conversation(
    conversation_id: str, body: TitleIn, user: CurrentUser, runtime: RuntimeDep
) -> ConversationOut:
    conversation = await runtime.store.rename_conversation(user.id, conversation_id, body.title)
    if conversation is None:
        raise _not_found()
    await runtime.cache.invalidate_user(user.id)
    return ConversationOut.of(conversation)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_conversation(conversation_id: str, user: CurrentUser, runtime: RuntimeDep) -> Response:
    if not await runtime.store.delete_conversation(user.id, conversation_id):
        raise _not_found()
    await runtime.cache.invalidate_user(user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
