"""Pick each backend from its URL (DESIGN.md: memory:// | redis://… | sqs://…)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from gpt_runtime.backends import Cache, JobQueue, WindowCounter
from gpt_runtime.backends.files import FileStore, LocalFileStore
from gpt_runtime.backends.memory import MemoryCache, MemoryJobQueue, MemoryWindowCounter

ErrorHook = Callable[[str], None]  # told the backend's name when a Redis call fails (redis_errors_total)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else url


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def open_cache(url: str, on_redis_error: ErrorHook | None = None) -> Cache:
    """memory:// (an LRU) or redis://host:port/db (with a small LRU in front)."""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryCache(max_entries=int(_query(url).get("max_entries", 10_000)))
    if scheme in ("redis", "rediss"):
        from gpt_runtime.backends.redis import RedisCache, connect
        from gpt_runtime.backends.tiered import TieredCache

        return TieredCache(RedisCache(connect(url), on_error=on_redis_error))
    raise ValueError(f"unsupported cache URL scheme: {scheme!r}")


def open_counter(url: str, on_redis_error: ErrorHook | None = None) -> WindowCounter:
    """memory:// or redis://host:port/db (falls back to memory while Redis is down)."""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryWindowCounter()
    if scheme in ("redis", "rediss"):
        from gpt_runtime.backends.redis import RedisWindowCounter, connect

        return RedisWindowCounter(connect(url), on_error=on_redis_error)
    raise ValueError(f"unsupported rate-limit URL scheme: {scheme!r}")


def open_queue(
    url: str, *, visibility_timeout_s: int, max_receives: int, on_redis_error: ErrorHook | None = None
) -> JobQueue:
    """sqlite:///path or memory:// (in-process workers only), redis://host:port/db, or sqs://name?region=…"""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryJobQueue(visibility_timeout_s, max_receives)
    if scheme == "sqlite":
        from gpt_runtime.backends.sqlite_queue import SQLiteJobQueue

        path = url.split("?", 1)[0].removeprefix("sqlite:///")  # as for the store: sqlite:////abs or sqlite:///rel
        if not path or path.startswith("sqlite:"):
            raise ValueError("a sqlite:// queue URL needs a file: sqlite:///path/to/queue.db")
        return SQLiteJobQueue(path, visibility_timeout_s, max_receives)
    if scheme in ("redis", "rediss"):
        from gpt_runtime.backends.redis import RedisJobQueue, connect

        query = _query(url)
        return RedisJobQueue(
            connect(url.split("?", 1)[0], timeout_s=5.0),
            name=query.get("queue", "jobs"),
            visibility_timeout_s=float(query.get("visibility_timeout", visibility_timeout_s)),
            max_receives=int(query.get("max_receives", max_receives)),
            on_error=on_redis_error,
        )
    if scheme == "sqs":
        from gpt_runtime.backends.sqs import SQSJobQueue

        return SQSJobQueue.from_url(url)
    raise ValueError(f"unsupported queue URL scheme: {scheme!r}")


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
