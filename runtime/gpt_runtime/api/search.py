"""GET /conversations/search?q=: the caller's own conversations ranked by meaning (services/search.py).

Registered before the conversations router, so `search` is never taken for a conversation id. Not in the
read cache: an answer depends on indexing that finishes after the writes that bump the cache's version.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gpt_runtime.api.embeddings import DISABLED, embedding_service
from gpt_runtime.api.responses import errors
from gpt_runtime.deps import CurrentUser, RuntimeDep
from gpt_runtime.domain_errors import InvalidValue

router = APIRouter(prefix="/conversations", tags=["conversations"])
MAX_QUERY_CHARS = 500


class SearchResultOut(BaseModel):
    conversation_id: str
    title: str
    score: float = Field(description="Cosine similarity of the best-matching chunk (title or message), -1..1")
    snippet: str = Field(description="The start of that chunk")


class SearchOut(BaseModel):
    results: list[SearchResultOut] = Field(description="Best first; only the caller's conversations")
    pending: int = Field(
        description="Conversations whose latest changes are not searchable yet (being indexed in the background)"
    )


# not read-cached (no read_cache.cached_read): its answers change when background indexing ends, which bumps no
# version; app.py includes this router first, so GET /conversations/search never reaches /conversations/{id}
@router.get("/search", responses=errors(422, 503) | {501: DISABLED})
async def search_conversations(
    user: CurrentUser,
    runtime: RuntimeDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for")],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> SearchOut:
    """The caller's conversations ranked by how close their title or a message is in meaning to `q`."""
    service = embedding_service(runtime)
    if not q.strip():
        raise InvalidValue("q: must contain a non-space character", param="q", code="string_too_short")
    hits, pending = await service.search.search(user.id, q.strip(), limit)
    return SearchOut(
        results=[SearchResultOut(**hit.__dict__) for hit in hits],
        pending=pending,
    )
