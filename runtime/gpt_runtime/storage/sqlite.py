"""SQLite store: the embedded default (one file, WAL, foreign keys with cascade)."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from gpt_runtime.storage.base import (
    FINISHED,
    AlreadyExists,
    ApiKey,
    Conversation,
    ConversationGone,
    IndexState,
    Job,
    JobStatus,
    Message,
    NewMessage,
    Page,
    Role,
    SearchChunk,
    User,
    VectorRows,
    decode_cursor,
    encode_cursor,
    job_changes,
    now_us,
    with_message_id,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    email_verified INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_user ON api_keys(user_id, created_at);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations(user_id, updated_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER,
    finish_reason TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, seq);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    conversation_id TEXT,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_versions (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS search_chunks (
    user_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    snippet TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (conversation_id, key)
);
CREATE INDEX IF NOT EXISTS search_chunks_by_user ON search_chunks(user_id);
CREATE TABLE IF NOT EXISTS search_index (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    messages INTEGER NOT NULL
);
"""

_API_KEY_COLUMNS = "id, user_id, name, prefix, key_hash, created_at, last_used_at"
_CONVERSATION_COLUMNS = (
    "c.id, c.user_id, c.title, c.created_at, c.updated_at,"
    " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
)


def _serialized(method):
    """Run a write method alone: one connection is shared, so transactions must not interleave."""

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        async with self._write_lock:
            return await method(self, *args, **kwargs)

    return wrapper


def _user(row: aiosqlite.Row) -> User:
    return User(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


def _conversation(row: Sequence[Any]) -> Conversation:
    return Conversation(*row)


class SQLiteStore:
    """Store on one SQLite database file (or ':memory:').

    Writes share one connection, one transaction at a time (`_serialized`). Reads go through a second,
    read-only connection: in WAL mode it sees only committed data, so a reader never observes half a
    write (a job already "succeeded" whose result is not written yet). ':memory:' cannot be opened twice,
    so there reads share the writer's connection and may see a write in progress."""

    def __init__(self, path: str, *, clock: Callable[[], int] = now_us):
        self.path = path
        self.clock = clock
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        """The writer's connection: use it inside `_serialized` methods only."""
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @property
    def reads(self) -> aiosqlite.Connection:
        """The connection for reads outside a write: committed data only (except on ':memory:')."""
        return self._reader or self.db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA foreign_keys = ON")
        await self._db.execute("PRAGMA journal_mode = WAL")
        await self._db.execute("PRAGMA busy_timeout = 5000")
        await self._db.executescript(SCHEMA)
        await self._db.commit()
        if self.path != ":memory:":
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA query_only = ON")
            await self._reader.execute("PRAGMA busy_timeout = 5000")

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        try:
            async with self.db.execute("SELECT 1") as cur:
                return (await cur.fetchone()) == (1,)
        except Exception:
            return False

    # users

    @_serialized
    async def create_user(self, email: str, password_hash: str, role: Role = "free") -> User:
        user = User(uuid.uuid4().hex, email, password_hash, role, False, self.clock())
        try:
            await self.db.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                (user.id, user.email, user.password_hash, user.role, 0, user.created_at),
            )
            await self.db.commit()
        except aiosqlite.IntegrityError as exc:
            await self.db.rollback()
            raise AlreadyExists(email) from exc
        return user

    async def get_user(self, user_id: str) -> User | None:
        async with self.reads.execute("SELECT * FROM users WHERE id = ?", (user_id,)) as cur:
            row = await cur.fetchone()
        return _user(row) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        async with self.reads.execute("SELECT * FROM users WHERE email = ?", (email,)) as cur:
            row = await cur.fetchone()
        return _user(row) if row else None

    @_serialized
    async def update_user(
        self,
        user_id: str,
        *,
        password_hash: str | None = None,
        email_verified: bool | None = None,
        role: Role | None = None,
    ) -> User | None:
        changes = {
            "password_hash": password_hash,
            "email_verified": None if email_verified is None else int(email_verified),
            "role": role,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)
            await self.db.execute(f"UPDATE users SET {assignments} WHERE id = ?", (*changes.values(), user_id))
            await self.db.commit()
        return await self.get_user(user_id)

    # api keys

    @_serialized
    async def create_api_key(self, user_id: str, name: str, prefix: str, key_hash: str) -> ApiKey:
        key = ApiKey(uuid.uuid4().hex, user_id, name, prefix, key_hash, self.clock(), None)
        try:
            await self.db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key.id, user_id, name, prefix, key_hash, key.created_at),
            )
            await self.db.commit()
        except aiosqlite.IntegrityError:
            await self.db.rollback()
            raise
        return key

    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        query = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at, id"
        async with self.reads.execute(query, (user_id,)) as cur:
            return [ApiKey(*row) for row in await cur.fetchall()]

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        query = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"
        async with self.reads.execute(query, (key_hash,)) as cur:
            row = await cur.fetchone()
        return ApiKey(*row) if row else None

    @_serialized
    async def delete_api_key(self, user_id: str, key_id: str) -> bool:
        cur = await self.db.execute("DELETE FROM api_keys WHERE id = ? AND user_id = ?", (key_id, user_id))
        await self.db.commit()
        return cur.rowcount > 0

    @_serialized
    async def touch_api_key(self, user_id: str, key_id: str, used_at: int) -> None:
        await self.db.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND user_id = ? AND COALESCE(last_used_at, 0) < ?",
            (used_at, key_id, user_id, used_at),
        )
        await self.db.commit()

    # conversations

    @_serialized
    async def create_conversation(self, user_id: str, title: str) -> Conversation:
        now = self.clock()
        conversation = Conversation(uuid.uuid4().hex, user_id, title, now, now, 0)
        await self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
            (conversation.id, user_id, title, now, now),
        )
        await self.db.commit()
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        query = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ? AND c.user_id = ?"
        async with self.reads.execute(query, (conversation_id, user_id)) as cur:
            row = await cur.fetchone()
        return _conversation(row) if row else None

    async def list_conversations(
        self, user_id: str, *, limit: int, cursor: str | None = None, updated_since: int | None = None
    ) -> Page:
        where = ["c.user_id = ?"]
        args: list[object] = [user_id]
        if updated_since is not None:
            where.append("c.updated_at > ?")
            args.append(updated_since)
        if cursor:
            after_updated, after_id = decode_cursor(cursor)
            where.append("(c.updated_at < ? OR (c.updated_at = ? AND c.id < ?))")
            args += [after_updated, after_updated, after_id]
        query = (
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE {' AND '.join(where)}"
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
        )
        async with self.reads.execute(query, (*args, limit + 1)) as cur:
            rows = list(await cur.fetchall())
        items = [_conversation(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].updated_at, items[-1].id) if len(rows) > limit else None
        return Page(items, next_cursor)

    @_serialized
    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> Conversation | None:
        cur = await self.db.execute(
            "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND user_id = ?",
            (title, self.clock(), conversation_id, user_id),
        )
        await self.db.commit()
        if cur.rowcount == 0:
            return None
        return await self.get_conversation(user_id, conversation_id)

    @_serialized
    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        cur = await self.db.execute(
            "DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
        )
        await self.db.commit()
        return cur.rowcount > 0

    @_serialized
    async def add_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage]
    ) -> list[Message] | None:
        stored = await self._insert_messages(user_id, conversation_id, messages, self.clock())
        if stored is None:
            await self.db.rollback()
            return None
        await self.db.commit()
        return stored

    async def _insert_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage], now: int
    ) -> list[Message] | None:
        """Append within the open transaction (no commit); None when the conversation is not the user's."""
        cur = await self.db.execute(
            "UPDATE conversations SET updated_at = ? WHERE id = ? AND user_id = ?",
            (now, conversation_id, user_id),
        )
        if cur.rowcount == 0:
            return None
        async with self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
        ) as seq_cur:
            row = await seq_cur.fetchone()
        assert row is not None  # an aggregate without GROUP BY answers one row
        (last_seq,) = row
        stored = []
        for offset, new in enumerate(messages, start=1):
            message = Message(
                uuid.uuid4().hex, conversation_id, new.role, new.content, new.tokens, new.finish_reason, now
            )
            await self.db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.id,
                    conversation_id,
                    last_seq + offset,
                    message.role,
                    message.content,
                    message.tokens,
                    message.finish_reason,
                    now,
                ),
            )
            stored.append(message)
        return stored

    async def list_messages(self, user_id: str, conversation_id: str) -> list[Message] | None:
        if await self.get_conversation(user_id, conversation_id) is None:
            return None
        async with self.reads.execute(
            "SELECT id, conversation_id, role, content, tokens, finish_reason, created_at"
            " FROM messages WHERE conversation_id = ? ORDER BY seq",
            (conversation_id,),
        ) as cur:
            rows = await cur.fetchall()
        return [Message(*row) for row in rows]

    # jobs

    @staticmethod
    def _job(row: aiosqlite.Row) -> Job:
        return Job(
            row[0],
            row[1],
            row[2],
            json.loads(row[3]),
            row[4],
            json.loads(row[5]) if row[5] else None,
            row[6],
            row[7],
            row[8],
            row[9],
        )

    @_serialized
    async def create_job(self, user_id: str, request: dict) -> Job:
        now = self.clock()
        job = Job(uuid.uuid4().hex, user_id, "queued", request, request.get("conversation_id"), None, None, 0, now, now)
        await self.db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?)",
            (job.id, user_id, job.status, json.dumps(request), job.conversation_id, now, now),
        )
        await self.db.commit()
        return job

    async def get_job(self, user_id: str, job_id: str) -> Job | None:
        async with self.reads.execute("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)) as cur:
            row = await cur.fetchone()
        return self._job(row) if row else None

    @_serialized
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
        changes = job_changes(
            status,
            self.clock(),
            conversation_id=conversation_id,
            result=result,
            error=error,
            attempts=attempts,
        )
        assignments = ", ".join(f"{column} = ?" for column in changes)
        cur = await self.db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND user_id = ? AND status NOT IN (?, ?)",
            (*changes.values(), job_id, user_id, *FINISHED),
        )
        await self.db.commit()
        if cur.rowcount == 0:
            return None
        return await self.get_job(user_id, job_id)

    @_serialized
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
        now = self.clock()
        try:
            changes = job_changes(status, now, conversation_id=conversation_id, error=error)
            assignments = ", ".join(f"{column} = ?" for column in changes)
            unfinished = ", ".join("?" * len(FINISHED))
            cur = await self.db.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND user_id = ? AND status NOT IN ({unfinished})",
                (*changes.values(), job_id, user_id, *FINISHED),
            )
            if cur.rowcount == 0:
                await self.db.rollback()
                return None
            stored: list[Message] = []
            if messages:
                inserted = await self._insert_messages(user_id, conversation_id or "", messages, now)
                if inserted is None:
                    raise ConversationGone(conversation_id)
                stored = inserted
            final = with_message_id(result, stored)
            if final is not None:
                await self.db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(final), job_id))
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise
        return await self.get_job(user_id, job_id)

    @_serialized
    async def delete_job(self, user_id: str, job_id: str) -> bool:
        cur = await self.db.execute("DELETE FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
        await self.db.commit()
        return cur.rowcount > 0

    # versions of a user's data (validate cached reads in every process)

    async def user_version(self, user_id: str) -> int:
        async with self.reads.execute("SELECT version FROM user_versions WHERE user_id = ?", (user_id,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else 0

    @_serialized
    async def bump_user_version(self, user_id: str) -> None:
        await self.db.execute(
            "INSERT INTO user_versions VALUES (?, 1) ON CONFLICT(user_id) DO UPDATE SET version = version + 1",
            (user_id,),
        )
        await self.db.commit()

    # conversation search: vectors beside the conversation they come from, deleted with it (ON DELETE CASCADE)

    async def index_states(self, user_id: str) -> list[IndexState]:
        query = (
            f"SELECT {_CONVERSATION_COLUMNS}, s.title, COALESCE(s.messages, 0) FROM conversations c"
            " LEFT JOIN search_index s ON s.conversation_id = c.id WHERE c.user_id = ?"
        )
        async with self.reads.execute(query, (user_id,)) as cur:
            rows = await cur.fetchall()
        return [IndexState(_conversation(row[:6]), row[6], row[7]) for row in rows]

    @_serialized
    async def put_search_chunks(
        self, user_id: str, conversation_id: str, chunks: Sequence[SearchChunk], *, title: str, messages: int
    ) -> bool:
        try:
            async with self.db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            ) as cur:
                if await cur.fetchone() is None:
                    return False
            await self.db.executemany(
                "INSERT OR REPLACE INTO search_chunks VALUES (?, ?, ?, ?, ?)",
                [(user_id, conversation_id, c.key, c.snippet, c.vector) for c in chunks],
            )
            await self.db.execute(
                "INSERT OR REPLACE INTO search_index VALUES (?, ?, ?)", (conversation_id, title, messages)
            )
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise
        return True

    async def search_vectors(self, user_id: str, conversation_ids: Sequence[str] | None = None) -> VectorRows:
        query = "SELECT conversation_id, key, vector FROM search_chunks WHERE user_id = ?"
        rows: list = []
        if conversation_ids is None:
            async with self.reads.execute(query, (user_id,)) as cur:
                rows = list(await cur.fetchall())
        for start in range(0, len(conversation_ids or ()), 500):
            some = list(conversation_ids or ())[start : start + 500]
            marks = ", ".join("?" * len(some))
            async with self.reads.execute(f"{query} AND conversation_id IN ({marks})", (user_id, *some)) as cur:
                rows += await cur.fetchall()
        return VectorRows([r[0] for r in rows], [r[1] for r in rows], b"".join(r[2] for r in rows))

    async def search_snippets(self, user_id: str, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        for conversation_id, key in refs:
            async with self.reads.execute(
                "SELECT snippet FROM search_chunks WHERE conversation_id = ? AND key = ? AND user_id = ?",
                (conversation_id, key, user_id),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                found[(conversation_id, key)] = row[0]
        return found

    @_serialized
    async def delete_search_chunks(self, user_id: str, conversation_id: str) -> None:
        await self.db.execute(
            "DELETE FROM search_chunks WHERE conversation_id = ? AND user_id = ?", (conversation_id, user_id)
        )
        await self.db.execute(
            "DELETE FROM search_index WHERE conversation_id = ?"
            " AND conversation_id IN (SELECT id FROM conversations WHERE user_id = ?)",
            (conversation_id, user_id),
        )
        await self.db.commit()
