"""The whole runtime on DynamoDB (moto's server): GPT_DATABASE_URL=dynamodb://… and nothing else changes."""

from __future__ import annotations

import uuid

import boto3
import pytest

from ..aws_emulator import moto_endpoint
from ..conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration


def test_accounts_and_conversations_live_in_the_table(tmp_path):
    endpoint = moto_endpoint()
    table = f"runtime-{uuid.uuid4().hex[:8]}"
    server = start_runtime(
        tmp_path,
        GPT_DATABASE_URL=f"dynamodb://{table}?region=us-east-1&endpoint_url={endpoint}",
        GPT_RATE_LIMIT_ANONYMOUS="0",
    )
    try:
        token = server.signup_and_login("dyn@example.com")
        with server.client(token) as api:
            created = [api.post("/conversations", json={"title": f"c{i}"}).json()["id"] for i in range(5)]
            first = api.get("/conversations", params={"limit": 2}).json()
            second = api.get("/conversations", params={"limit": 2, "cursor": first["next_cursor"]}).json()
            third = api.get("/conversations", params={"limit": 2, "cursor": second["next_cursor"]}).json()
            pages = [[c["id"] for c in page["items"]] for page in (first, second, third)]
            assert pages == [created[4:2:-1], created[2:0:-1], created[:1]] and third["next_cursor"] is None
            bad = api.get("/conversations", params={"cursor": "garbage!"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "cursor"
            assert api.delete(f"/conversations/{created[0]}").status_code == 204
            assert api.get(f"/conversations/{created[0]}").status_code == 404
        with server.client() as client:
            again = client.post("/auth/signup", json={"email": "dyn@example.com", "password": "another password"})
            assert again.status_code == 409
    finally:
        stop_runtime(server)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    claim = dynamodb.get_item(TableName=table, Key={"pk": {"S": "EMAIL#dyn@example.com"}, "sk": {"S": "EMAIL"}})
    assert "Item" in claim  # the account really is in DynamoDB, not in a SQLite file beside it
    assert not (tmp_path / "data" / "gpt.db").exists()
    dynamodb.delete_table(TableName=table)
