"""Stores under test: SQLite on a temp file and DynamoDB on moto's server (one fresh table per test)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import boto3
import pytest
from gpt_runtime.storage.dynamodb import DynamoDBStore
from gpt_runtime.storage.sqlite import SQLiteStore

from ..aws_emulator import moto_endpoint


class Clock:
    """A test clock in microseconds: each reading advances by `step` (0 freezes it)."""

    def __init__(self, start: int = 1_700_000_000_000_000, step: int = 1):
        self.now = start
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@dataclass
class Backend:
    """A store plus a peek under the interface (only used to prove a cascade really deleted rows)."""

    store: SQLiteStore | DynamoDBStore
    clock: Clock
    raw_message_count: Callable[[str], int]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def moto_url() -> str:
    return moto_endpoint()


@pytest.fixture(params=["sqlite", "dynamodb"])
async def backend(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Backend]:
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "gpt.db"
        store = SQLiteStore(str(path), clock=clock)

        def raw_count(conversation_id: str) -> int:
            with sqlite3.connect(path) as db:
                return db.execute(
                    "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
                ).fetchone()[0]

    else:
        endpoint = request.getfixturevalue("moto_url")
        table = f"gpt-{uuid.uuid4().hex[:12]}"
        store = DynamoDBStore.from_url(f"dynamodb://{table}?region=us-east-1&endpoint_url={endpoint}", clock=clock)
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)

        def raw_count(conversation_id: str) -> int:
            response = client.query(
                TableName=table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"CONV#{conversation_id}"}},
                Select="COUNT",
            )
            return response["Count"]

    await store.open()
    try:
        yield Backend(store, clock, raw_count)
    finally:
        await store.close()
        if request.param == "dynamodb":
            client.delete_table(TableName=table)
