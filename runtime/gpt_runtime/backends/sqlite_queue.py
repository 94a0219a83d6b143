"""The embedded default job queue: durable in a SQLite file, for the API's in-process worker.

URL: ``sqlite:///path/to/queue.db`` (default ``<data_dir>/queue.db``). An accepted job survives a
crash or kill -9 of the process: its message is committed before the API answers 202, and at the next
start every message that was in flight is given back at once. One process owns the file (an exclusive
lock, taken when the queue is made, refuses a second one), so nothing else can be working on it.
Leases, retries and the dead-letter state work as in the Redis queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import uuid
from pathlib import Path

import aiosqlite

from gpt_runtime.backends import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    receipt TEXT,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue(dead, visible_at, id);
"""


class SQLiteJobQueue:
    """JobQueue in one SQLite file owned by one process."""

    def __init__(self, path: str, visibility_timeout_s: float = 300.0, max_receives: int = 3, poll_s: float = 0.5):
        self.path = path
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receives = max_receives
        self.poll_s = poll_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._arrived = asyncio.Event()
        self._owner = self._own(path)

    @staticmethod
    def _own(path: str) -> int:
        """Hold `<path>.lock` for this process's lifetime (the kernel drops it when the process dies)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"the job queue {path} is in use by another process; the embedded queue serves one process:"
                " give each its own GPT_DATA_DIR, or share a redis:// or sqs:// GPT_QUEUE_URL"
            ) from None
        return fd

    async def _conn(self) -> aiosqlite.Connection:
        """Open on first use; give back whatever a previous (crashed) process had in flight."""
        if self._db is None:
            db = await aiosqlite.connect(self.path)
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.executescript(SCHEMA)
            await db.execute("UPDATE queue SET receipt = NULL, visible_at = 0 WHERE receipt IS NOT NULL AND dead = 0")
            await db.commit()
            self._db = db
        return self._db

    async def enqueue(self, body: str) -> None:
        async with self._lock:
            db = await self._conn()
            await db.execute("INSERT INTO queue (body, visible_at) VALUES (?, 0)", (body,))
            await db.commit()
        self._arrived.set()

    async def _take(self) -> Delivery | None:
        async with self._lock:
            db = await self._conn()
            now = time.time()
            # leases that ran out at their last allowed delivery go dead; the others come back by themselves
            await db.execute(
                "UPDATE queue SET dead = 1, receipt = NULL"
                " WHERE dead = 0 AND receipt IS NOT NULL AND visible_at <= ? AND receives >= ?",
                (now, self.max_receives),
            )
            receipt = uuid.uuid4().hex
            async with db.execute(
                "UPDATE queue SET receipt = ?, receives = receives + 1, visible_at = ?"
                " WHERE id = (SELECT id FROM queue WHERE dead = 0 AND visible_at <= ? ORDER BY id LIMIT 1)"
                " RETURNING body, receives",
                (receipt, now + self.visibility_timeout_s, now),
            ) as cur:
                row = await cur.fetchone()
            await db.commit()
        return Delivery(row[0], receipt, int(row[1])) if row else None

    async def receive(self, wait_s: float) -> Delivery | None:
        deadline = time.monotonic() + wait_s
        while True:
            self._arrived.clear()
            delivery = await self._take()
            left = deadline - time.monotonic()
            if delivery is not None or left <= 0:
                return delivery
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(self.poll_s, left))

    async def _update(self, sql: str, *args: object) -> None:
        async with self._lock:
            db = await self._conn()
            await db.execute(sql, args)
            await db.commit()

    async def extend(self, delivery: Delivery) -> None:
        await self._update(
            "UPDATE queue SET visible_at = ? WHERE receipt = ?",
            time.time() + self.visibility_timeout_s,
            delivery.receipt,
        )

    async def ack(self, delivery: Delivery) -> None:
        await self._update("DELETE FROM queue WHERE receipt = ?", delivery.receipt)

    async def retry(self, delivery: Delivery) -> None:
        await self._update(
            "UPDATE queue SET receipt = NULL, visible_at = 0, dead = (receives >= ?) WHERE receipt = ?",
            self.max_receives,
            delivery.receipt,
        )
        self._arrived.set()

    async def depth(self) -> int:
        """Messages waiting for a worker (not in flight, not dead)."""
        async with self._lock:
            db = await self._conn()
            sql = "SELECT COUNT(*) FROM queue WHERE dead = 0 AND visible_at <= ?"
            async with db.execute(sql, (time.time(),)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def dead_letters(self) -> list[str]:
        async with self._lock:
            db = await self._conn()
            async with db.execute("SELECT body FROM queue WHERE dead = 1 ORDER BY id") as cur:
                return [row[0] for row in await cur.fetchall()]

    async def ping(self) -> bool:
        try:
            async with self._lock:
                db = await self._conn()
                async with db.execute("SELECT 1") as cur:
                    return (await cur.fetchone()) == (1,)
        except Exception:
            return False

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._owner >= 0:
            os.close(self._owner)  # releases the lock
            self._owner = -1
