"""The Store interface, its records, cursors, and the URL that picks a backend."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["free", "premium", "admin"]


class AlreadyExists(Exception):
    """A unique key (such as a user's email) is taken."""


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not issue."""


class ConversationGone(LookupError):
    """The conversation a write was meant for no longer exists."""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str
    role: Role
    email_verified: bool
    created_at: int  # microseconds since the epoch, UTC


@dataclass(frozen=True)
class ApiKey:
    """A long-lived bearer key of a user's: only its SHA-256 is stored, and a prefix to recognise it by."""

    id: str
    user_id: str
    name: str
    prefix: str
    key_hash: str
    created_at: int
    last_used_at: int | None = None


@dataclass(frozen=True)
class Conversation:
    id: str
    user_id: str
    title: str
    created_at: int
    updated_at: int
    message_count: int = 0


@dataclass(frozen=True)
class NewMessage:
    role: Literal["system", "user", "assistant"]
    content: str
    tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    role: Literal["system", "user", "assistant"]
    content: str
    tokens: int | None
    finish_reason: str | None
    created_at: int


JobStatus = Literal["queued", "running", "succeeded", "failed"]
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed")


@dataclass(frozen=True)
class Job:
    """An async generation: its request, where it stands, and its result once done."""

    id: str
    user_id: str
    status: JobStatus
    request: dict  # JSON: prompt, conversation_id, system, sampling params
    conversation_id: str | None
    result: dict | None  # JSON: content, finish_reason, usage, message_id
    error: str | None
    attempts: int
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class Page:
    items: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True)
class SearchChunk:
    """One searchable piece of a conversation: its title, or a chunk of a message (key "<message id>.<n>")."""

    key: str
    snippet: str  # the start of the text it was embedded from, shown with a search result
    vector: bytes  # float32 unit vector, little-endian


@dataclass(frozen=True)
class IndexState:
    """A conversation and how much of it the search index holds: the title and first messages embedded."""

    conversation: Conversation
    indexed_title: str | None  # None: never indexed
    indexed_messages: int

    @property
    def stale(self) -> bool:
        return self.indexed_title != self.conversation.title or self.indexed_messages != self.conversation.message_count


@dataclass(frozen=True)
class VectorRows:
    """A user's search vectors: row i is `keys[i]` of `conversation_ids[i]`; `matrix` is (n, dim) float32."""

    conversation_ids: list[str]
    keys: list[str]
    matrix: bytes  # n * dim float32 values, row after row


def job_changes(
    status: JobStatus,
    now: int,
    *,
    conversation_id: str | None = None,
    result: dict | None = None,
    error: str | None = None,
    attempts: int | None = None,
) -> dict[str, object]:
    """The column values an update_job call writes (result as JSON); every store applies the same set."""
    changes: dict[str, object] = {"status": status, "updated_at": now}
    if conversation_id is not None:
        changes["conversation_id"] = conversation_id
    if result is not None:
        changes["result"] = json.dumps(result)
    if error is not None:
        changes["error"] = error
    if attempts is not None:
        changes["attempts"] = attempts
    return changes


def now_us() -> int:
    """Current time in microseconds since the epoch."""
    return time.time_ns() // 1000


def encode_cursor(updated_at: int, item_id: str) -> str:
    """An opaque cursor pointing just past (updated_at, id) in newest-first order."""
    raw = json.dumps([updated_at, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of encode_cursor; raises InvalidCursor on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, item_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(updated_at, int) or not isinstance(item_id, str):
        raise InvalidCursor("malformed cursor")
    return updated_at, item_id


class Store(Protocol):
    """Users, conversations and messages. Every conversation call is scoped by user id."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    async def create_user(self, email: str, password_hash: str, role: Role = "free") -> User: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def get_user_by_email(self, email: str) -> User | None: ...
    async def update_user(
        self,
        user_id: str,
        *,
        password_hash: str | None = None,
        email_verified: bool | None = None,
        role: Role | None = None,
    ) -> User | None: ...

    async def create_api_key(self, user_id: str, name: str, prefix: str, key_hash: str) -> ApiKey: ...
    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        """A user's keys, oldest first."""
        ...

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def delete_api_key(self, user_id: str, key_id: str) -> bool: ...
    async def touch_api_key(self, user_id: str, key_id: str, used_at: int) -> None: ...

    async def create_conversation(self, user_id: str, title: str) -> Conversation: ...
    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None: ...
    async def list_conversations(
        self, user_id: str, *, limit: int, cursor: str | None = None, updated_since: int | None = None
    ) -> Page: ...
    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> Conversation | None: ...
    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool: ...
    async def add_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage]
    ) -> list[Message] | None: ...
    async def list_messages(self, user_id: str, conversation_id: str) -> list[Message] | None: ...

    async def create_job(self, user_id: str, request: dict) -> Job: ...
    async def get_job(self, user_id: str, job_id: str) -> Job | None: ...
    async def update_job(
        self,
        user_id: str,
        job_id: str,
        *,
        status: JobStatus,
        conversation_id: str | None = None,
        result: dict | None = None,
        error: str | None = None,
        attempts: int | None = None,
    ) -> Job | None:
        """Change a job that is not finished yet; None when it is finished, missing or not the user's."""
        ...

    async def finish_job(
        self,
        user_id: str,
        job_id: str,
        *,
        status: Literal["succeeded", "failed"],
        conversation_id: str | None = None,
        messages: Sequence[NewMessage] = (),
        result: dict | None = None,
        error: str | None = None,
    ) -> Job | None:
        """Finish a job exactly once, in one transaction with the messages it wrote.

        While the job is queued or running: append `messages` to `conversation_id`, set the status,
        `result` (its `message_id` becomes the last stored message's id) and `error`. Returns the
        finished job, or None when it was finished before or does not exist: then nothing is written,
        which makes a duplicate delivery harmless. Raises ConversationGone when the conversation
        the messages belong to was deleted.
        """
        ...

    async def delete_job(self, user_id: str, job_id: str) -> bool: ...

    async def user_version(self, user_id: str) -> int:
        """A number that changes on every bump_user_version: validates cached reads in any process."""
        ...

    async def bump_user_version(self, user_id: str) -> None: ...

    # conversation search (services/search.py): vectors stored with their owner, removed with the conversation

    async def index_states(self, user_id: str) -> list[IndexState]:
        """Every conversation of the user's, with what the search index holds of it."""
        ...

    async def put_search_chunks(
        self, user_id: str, conversation_id: str, chunks: Sequence[SearchChunk], *, title: str, messages: int
    ) -> bool:
        """Store (replace by key) chunks of the user's conversation and record that its `title` and first
        `messages` messages are indexed. False, with nothing kept, when the conversation is not the user's
        (or was deleted meanwhile)."""
        ...

    async def search_vectors(self, user_id: str, conversation_ids: Sequence[str] | None = None) -> VectorRows:
        """The user's search vectors, all or those of some of their conversations (no other user's are
        reachable: another user's conversation id finds nothing)."""
        ...

    async def search_snippets(self, user_id: str, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The snippets of (conversation_id, key) pairs of the user's; missing ones are left out."""
        ...

    async def delete_search_chunks(self, user_id: str, conversation_id: str) -> None:
        """Remove a conversation's vectors (a search met them after the conversation was deleted)."""
        ...


def with_message_id(result: dict | None, stored: Sequence[Message]) -> dict | None:
    """A job result pointing at the last message its completion stored."""
    if result is None or not stored:
        return result
    return {**result, "message_id": stored[-1].id}
