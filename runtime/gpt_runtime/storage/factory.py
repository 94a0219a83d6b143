"""Pick the store from its URL: the only module in storage/ that knows the implementations."""

from __future__ import annotations

from gpt_runtime.storage.base import Store


def open_store(url: str) -> Store:
    """A store for `url`: sqlite:///path (default) or dynamodb://TABLE?region=..&endpoint_url=.. (see dynamodb.py)."""
    if url.startswith("sqlite:///"):
        from gpt_runtime.storage.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith("dynamodb://"):
        from gpt_runtime.storage.dynamodb import DynamoDBStore

        return DynamoDBStore.from_url(url)
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
