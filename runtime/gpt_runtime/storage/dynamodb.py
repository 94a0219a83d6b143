"""DynamoDB store: users, conversations, messages and jobs in one table.

URL: ``dynamodb://TABLE?region=REGION&endpoint_url=URL``. Every part is optional: the table defaults to
``gpt``, the region and credentials come from boto3's usual chain (env, profile, IRSA), ``endpoint_url``
points at DynamoDB Local / moto / a VPC endpoint. ``dynamodb://gpt-prod?region=eu-west-1``.

The table (created on open() when missing, on-demand billing) has a string partition key ``pk``, a string
sort key ``sk`` and one local secondary index:

=====================  ==================  ====================================================
item                   pk / sk             attributes
=====================  ==================  ====================================================
user                   USER#<id> / USER    email, password_hash, role, email_verified, created_at
email claim            EMAIL#<email> /     user_id (makes emails unique: written in the same
                       EMAIL               transaction as the user, ``attribute_not_exists``)
conversation           USER#<uid> /        title, created_at, updated_at, message_count,
                       CONV#<id>           ``lsi1sk`` = zero-padded updated_at + ``#`` + id
message                CONV#<cid> /        id, role, content, tokens, finish_reason, created_at
                       MSG#<seq, padded>
job                    JOB#<id> / JOB      user_id, status, request/result (JSON text), ...
api key                USER#<uid> /        id, name, prefix, key_hash, created_at, last_used_at
                       APIKEY#<id>
api key lookup         APIKEYHASH#<sha256> user_id, id (written and deleted in one transaction with the key)
                       / APIKEY
search vector          USER#<uid> /        conversation_id, key, snippet, vector (binary: 384 float32);
                       VEC#<cid>#<key>     the conversation item's ``search_title`` / ``search_messages``
                                           record what the index holds of it
=====================  ==================  ====================================================

* Scoping is by key: a conversation lives under its owner's partition, so another user's id simply
  addresses a different item. Jobs carry ``user_id`` and every read/update checks it.
* ``by_updated`` (LSI on ``pk`` + ``lsi1sk``, all attributes projected) lists a user's conversations
  newest first. It is a *local* index on purpose: unlike a GSI it can be read with ``ConsistentRead``,
  so a conversation shows up in the list right after it is created or written to (multi-device sync
  relies on ``updated_since``). The cursor and ``updated_since`` become a key range on ``lsi1sk``, so a
  page costs one query however deep it is; ties on updated_at are broken by id exactly as in SQLite,
  hence the same opaque cursors (storage/base.py) work for both stores.
* Messages: ``add_messages`` reads the conversation's ``message_count`` and writes the messages with
  the next sequence numbers plus the conversation update in one transaction conditioned on that count
  (optimistic concurrency: a concurrent writer makes it retry). ``message_count`` is therefore exact.
* Limits that come with DynamoDB: an item is at most 400 KB (a message's content well under that; the
  runtime's prompt and token limits keep it there) and a transaction 100 items, so large appends are
  written in chunks of 99 messages, each its own transaction.
* Delete removes the conversation item first (so it is gone atomically for readers and later writes
  fail their condition), then its messages and search vectors in batches.
* Search vectors live in their owner's partition, so a search reads one key range (``VEC#``) of the caller's
  own partition and nothing else; brute force over it (services/search.py) scales to tens of thousands of
  vectors per user (about 2 kB an item: 1 MB query pages, ~500 vectors each).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

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

INDEX = "by_updated"
_TRANSACTION_MAX = 100  # DynamoDB's limit on actions per TransactWriteItems
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def parse_url(url: str) -> dict[str, str | None]:
    """`dynamodb://TABLE?region=..&endpoint_url=..` -> table, region, endpoint_url."""
    parts = urlsplit(url)
    if parts.scheme != "dynamodb":
        raise ValueError(f"not a dynamodb:// URL: {url!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"region", "endpoint_url"}
    if unknown:
        raise ValueError(f"unknown dynamodb URL options: {', '.join(sorted(unknown))}")
    table = (parts.netloc + parts.path).strip("/") or "gpt"
    return {"table": table, "region": query.get("region"), "endpoint_url": query.get("endpoint_url")}


def _ser(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in item.items() if value is not None}


def _de(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def _order_key(updated_at: int, item_id: str) -> str:
    return f"{updated_at:020d}#{item_id}"


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _cancelled_by(exc: ClientError) -> set[str]:
    """The reasons a cancelled transaction gives for its items (None entries dropped)."""
    codes = (r.get("Code") for r in exc.response.get("CancellationReasons", []) if isinstance(r, dict))
    reasons = {code for code in codes if code is not None and code != "None"}
    if not reasons and "ConditionalCheckFailed" in str(exc):
        reasons.add("ConditionalCheckFailed")
    return reasons


def _reasons(exc: ClientError) -> list[str]:
    """Each transaction item's cancellation reason, in the order the items were given."""
    return [str(r.get("Code") or "None") for r in exc.response.get("CancellationReasons", []) if isinstance(r, dict)]


def _user(item: dict[str, Any]) -> User:
    return User(
        item["id"],
        item["email"],
        item["password_hash"],
        item["role"],
        bool(item["email_verified"]),
        int(item["created_at"]),
    )


def _api_key_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "name": key.name,
        "prefix": key.prefix,
        "key_hash": key.key_hash,
        "created_at": key.created_at,
    }


def _api_key(item: dict[str, Any]) -> ApiKey:
    last_used = item.get("last_used_at")
    return ApiKey(
        item["id"],
        item["user_id"],
        item["name"],
        item["prefix"],
        item["key_hash"],
        int(item["created_at"]),
        None if last_used is None else int(last_used),
    )


def _conversation(item: dict[str, Any]) -> Conversation:
    return Conversation(
        item["id"],
        item["user_id"],
        item["title"],
        int(item["created_at"]),
        int(item["updated_at"]),
        int(item["message_count"]),
    )


def _message(item: dict[str, Any]) -> Message:
    return Message(
        item["id"],
        item["conversation_id"],
        item["role"],
        item["content"],
        None if item.get("tokens") is None else int(item["tokens"]),
        item.get("finish_reason"),
        int(item["created_at"]),
    )


def _job(item: dict[str, Any]) -> Job:
    return Job(
        item["id"],
        item["user_id"],
        item["status"],
        json.loads(item["request"]),
        item.get("conversation_id"),
        json.loads(item["result"]) if item.get("result") else None,
        item.get("error"),
        int(item["attempts"]),
        int(item["created_at"]),
        int(item["updated_at"]),
    )


class DynamoDBStore:
    """Store on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        table: str = "gpt",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        clock: Callable[[], int] = now_us,
    ):
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.clock = clock
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], int] = now_us) -> DynamoDBStore:
        parsed = parse_url(url)
        return cls(parsed["table"] or "gpt", region=parsed["region"], endpoint_url=parsed["endpoint_url"], clock=clock)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("store is not open")
        return self._client

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One DynamoDB API call, off the event loop (boto3 is blocking; its clients are thread-safe)."""
        return await asyncio.to_thread(getattr(self.client, operation), **kwargs)

    # lifecycle

    async def open(self) -> None:
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        self._client = boto3.session.Session().client(
            "dynamodb", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )
        await asyncio.to_thread(self._ensure_table)

    def _ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
            return
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        try:
            self.client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                    {"AttributeName": "lsi1sk", "AttributeType": "S"},
                ],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                LocalSecondaryIndexes=[
                    {
                        "IndexName": INDEX,
                        "KeySchema": [
                            {"AttributeName": "pk", "KeyType": "HASH"},
                            {"AttributeName": "lsi1sk", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another replica created it first
                raise
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = self.client.describe_table(TableName=self.table)["Table"]["TableStatus"]
            if status == "ACTIVE":
                return
            time.sleep(1)
        raise RuntimeError(f"DynamoDB table {self.table!r} did not become ACTIVE")

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    async def ping(self) -> bool:
        try:
            await self._call("get_item", TableName=self.table, Key=_ser({"pk": "PING", "sk": "PING"}))
            return True
        except Exception:
            return False

    async def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = await self._call(
            "get_item", TableName=self.table, Key=_ser({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        item = response.get("Item")
        return _de(item) if item else None

    # users

    async def create_user(self, email: str, password_hash: str, role: Role = "free") -> User:
        user = User(uuid.uuid4().hex, email, password_hash, role, False, self.clock())
        item = {
            "pk": f"USER#{user.id}",
            "sk": "USER",
            "id": user.id,
            "email": email,
            "password_hash": password_hash,
            "role": role,
            "email_verified": False,
            "created_at": user.created_at,
        }
        claim = {"pk": f"EMAIL#{email}", "sk": "EMAIL", "user_id": user.id}
        not_there = "attribute_not_exists(pk)"
        try:
            await self._call(
                "transact_write_items",
                TransactItems=[
                    {"Put": {"TableName": self.table, "Item": _ser(claim), "ConditionExpression": not_there}},
                    {"Put": {"TableName": self.table, "Item": _ser(item), "ConditionExpression": not_there}},
                ],
            )
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in _cancelled_by(exc):
                raise AlreadyExists(email) from exc
            raise
        return user

    async def get_user(self, user_id: str) -> User | None:
        item = await self._get(f"USER#{user_id}", "USER")
        return _user(item) if item else None

    async def get_user_by_email(self, email: str) -> User | None:
        claim = await self._get(f"EMAIL#{email}", "EMAIL")
        return await self.get_user(claim["user_id"]) if claim else None

    async def update_user(
        self,
        user_id: str,
        *,
        password_hash: str | None = None,
        email_verified: bool | None = None,
        role: Role | None = None,
    ) -> User | None:
        changes = {"password_hash": password_hash, "email_verified": email_verified, "role": role}
        changes = {key: value for key, value in changes.items() if value is not None}
        if not changes:
            return await self.get_user(user_id)
        try:
            response = await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": "USER"}),
                UpdateExpression="SET " + ", ".join(f"#{key} = :{key}" for key in changes),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={f"#{key}": key for key in changes},
                ExpressionAttributeValues=_ser({f":{key}": value for key, value in changes.items()}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _user(_de(response["Attributes"]))

    # api keys

    async def create_api_key(self, user_id: str, name: str, prefix: str, key_hash: str) -> ApiKey:
        key = ApiKey(uuid.uuid4().hex, user_id, name, prefix, key_hash, self.clock(), None)
        item = {"pk": f"USER#{user_id}", "sk": f"APIKEY#{key.id}", **_api_key_fields(key)}
        lookup = {"pk": f"APIKEYHASH#{key_hash}", "sk": "APIKEY", "user_id": user_id, "id": key.id}
        not_there = "attribute_not_exists(pk)"
        await self._call(
            "transact_write_items",
            TransactItems=[
                {"Put": {"TableName": self.table, "Item": _ser(item), "ConditionExpression": not_there}},
                {"Put": {"TableName": self.table, "Item": _ser(lookup), "ConditionExpression": not_there}},
            ],
        )
        return key

    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _ser({":pk": f"USER#{user_id}", ":prefix": "APIKEY#"}),
            "ConsistentRead": True,
        }
        while True:
            response = await self._call("query", **kwargs)
            items += [_de(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return sorted((_api_key(item) for item in items), key=lambda k: (k.created_at, k.id))

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        lookup = await self._get(f"APIKEYHASH#{key_hash}", "APIKEY")
        if lookup is None:
            return None
        item = await self._get(f"USER#{lookup['user_id']}", f"APIKEY#{lookup['id']}")
        return _api_key(item) if item else None

    async def delete_api_key(self, user_id: str, key_id: str) -> bool:
        item = await self._get(f"USER#{user_id}", f"APIKEY#{key_id}")
        if item is None:
            return False
        try:
            await self._call(
                "transact_write_items",
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": _ser({"pk": f"USER#{user_id}", "sk": f"APIKEY#{key_id}"}),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": _ser({"pk": f"APIKEYHASH#{item['key_hash']}", "sk": "APIKEY"}),
                        }
                    },
                ],
            )
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in _cancelled_by(exc):
                return False  # revoked concurrently
            raise
        return True

    async def touch_api_key(self, user_id: str, key_id: str, used_at: int) -> None:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": f"APIKEY#{key_id}"}),
                UpdateExpression="SET last_used_at = :used",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :used)"
                ),
                ExpressionAttributeValues=_ser({":used": used_at}),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":  # revoked, or a later use was recorded
                raise

    # conversations

    async def create_conversation(self, user_id: str, title: str) -> Conversation:
        now = self.clock()
        conversation = Conversation(uuid.uuid4().hex, user_id, title, now, now, 0)
        item = {
            "pk": f"USER#{user_id}",
            "sk": f"CONV#{conversation.id}",
            "lsi1sk": _order_key(now, conversation.id),
            "id": conversation.id,
            "user_id": user_id,
            "title": title,
            "created_at": now,
            "updated_at": now,
            "message_count": 0,
        }
        await self._call(
            "put_item", TableName=self.table, Item=_ser(item), ConditionExpression="attribute_not_exists(pk)"
        )
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        item = await self._get(f"USER#{user_id}", f"CONV#{conversation_id}")
        return _conversation(item) if item else None

    async def list_conversations(
        self, user_id: str, *, limit: int, cursor: str | None = None, updated_since: int | None = None
    ) -> Page:
        values: dict[str, Any] = {":pk": f"USER#{user_id}"}
        low = f"{updated_since + 1:020d}" if updated_since is not None else None
        high = _order_key(*decode_cursor(cursor)) if cursor else None
        if low is not None and high is not None:
            condition = "pk = :pk AND lsi1sk BETWEEN :low AND :high"  # inclusive: the cursor's own key is dropped below
            values |= {":low": low, ":high": high}
        elif high is not None:
            condition = "pk = :pk AND lsi1sk < :high"
            values[":high"] = high
        elif low is not None:
            condition = "pk = :pk AND lsi1sk >= :low"
            values[":low"] = low
        else:
            condition = "pk = :pk"
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while len(items) <= limit:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": INDEX,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": _ser(values),
                "ScanIndexForward": False,
                "ConsistentRead": True,
                "Limit": limit + 2 - len(items),
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = await self._call("query", **kwargs)
            items += [item for item in map(_de, response.get("Items", [])) if item["lsi1sk"] != high]
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        page = [_conversation(item) for item in items[:limit]]
        next_cursor = encode_cursor(page[-1].updated_at, page[-1].id) if len(items) > limit else None
        return Page(page, next_cursor)

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> Conversation | None:
        now = self.clock()
        try:
            response = await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}),
                UpdateExpression="SET title = :title, updated_at = :now, lsi1sk = :order",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_ser(
                    {":title": title, ":now": now, ":order": _order_key(now, conversation_id)}
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _conversation(_de(response["Attributes"]))

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        try:
            await self._call(
                "delete_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}),
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        keys = [
            {"pk": item["pk"], "sk": item["sk"]} for item in await self._message_items(conversation_id, keys_only=True)
        ]
        keys += await self._vector_keys(user_id, conversation_id)
        for start in range(0, len(keys), 25):
            pending: list[dict[str, Any]] = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            while pending:
                response = await self._call("batch_write_item", RequestItems={self.table: pending})
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if pending:
                    await asyncio.sleep(0.05)
        return True

    async def add_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage]
    ) -> list[Message] | None:
        key = {"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}
        stored: list[Message] = []
        chunk_size = _TRANSACTION_MAX - 1
        chunks = [messages[i : i + chunk_size] for i in range(0, len(messages), chunk_size)] or [[]]
        now = self.clock()
        for chunk in chunks:
            for attempt in range(20):
                conversation = await self._get(key["pk"], key["sk"])
                if conversation is None:
                    return None
                count = int(conversation["message_count"])
                new = [
                    Message(uuid.uuid4().hex, conversation_id, m.role, m.content, m.tokens, m.finish_reason, now)
                    for m in chunk
                ]
                actions = [self._append_update(key, conversation_id, now, count, len(new))]
                actions += [self._message_put(message, seq) for seq, message in enumerate(new, start=count + 1)]
                try:
                    await self._call("transact_write_items", TransactItems=actions)
                except ClientError as exc:
                    retryable = {"ConditionalCheckFailed", "TransactionConflict"}
                    if _code(exc) == "TransactionConflictException" or (
                        _code(exc) == "TransactionCanceledException" and _cancelled_by(exc) <= retryable
                    ):
                        await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
                        continue  # the conversation changed (or vanished) under us: read it again
                    raise
                stored += new
                break
            else:
                raise RuntimeError(f"could not append to conversation {conversation_id}: too much contention")
        return stored

    async def _message_items(self, conversation_id: str, *, keys_only: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :msg)",
            "ExpressionAttributeValues": _ser({":pk": f"CONV#{conversation_id}", ":msg": "MSG#"}),
            "ConsistentRead": True,
        }
        if keys_only:
            kwargs["ProjectionExpression"] = "pk, sk"
        while True:
            response = await self._call("query", **kwargs)
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return items if keys_only else [_de(item) for item in items]
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def list_messages(self, user_id: str, conversation_id: str) -> list[Message] | None:
        if await self.get_conversation(user_id, conversation_id) is None:
            return None
        return [_message(item) for item in await self._message_items(conversation_id)]

    # jobs

    async def create_job(self, user_id: str, request: dict) -> Job:
        now = self.clock()
        job = Job(uuid.uuid4().hex, user_id, "queued", request, request.get("conversation_id"), None, None, 0, now, now)
        item = {
            "pk": f"JOB#{job.id}",
            "sk": "JOB",
            "id": job.id,
            "user_id": user_id,
            "status": job.status,
            "request": json.dumps(request),
            "conversation_id": job.conversation_id,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        await self._call(
            "put_item", TableName=self.table, Item=_ser(item), ConditionExpression="attribute_not_exists(pk)"
        )
        return job

    async def get_job(self, user_id: str, job_id: str) -> Job | None:
        item = await self._get(f"JOB#{job_id}", "JOB")
        return _job(item) if item and item["user_id"] == user_id else None

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
        values = {f":{key}": value for key, value in changes.items()}
        values |= {":uid": user_id, ":succeeded": "succeeded", ":failed": "failed"}
        try:
            response = await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"JOB#{job_id}", "sk": "JOB"}),
                UpdateExpression="SET " + ", ".join(f"#{key} = :{key}" for key in changes),
                ConditionExpression=(
                    "attribute_exists(pk) AND user_id = :uid AND NOT (#status IN (:succeeded, :failed))"
                ),
                ExpressionAttributeNames={f"#{key}": key for key in changes},
                ExpressionAttributeValues=_ser(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _job(_de(response["Attributes"]))

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
        if len(messages) >= _TRANSACTION_MAX - 1:
            raise ValueError("a job finishes with at most 98 messages")
        job_key = {"pk": f"JOB#{job_id}", "sk": "JOB"}
        for attempt in range(20):
            job = await self._get(job_key["pk"], job_key["sk"])
            if job is None or job["user_id"] != user_id or job["status"] in FINISHED:
                return None
            now = self.clock()
            actions: list[dict[str, Any]] = []
            stored: list[Message] = []
            if messages:
                conversation_key = {"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}
                conversation = await self._get(conversation_key["pk"], conversation_key["sk"])
                if conversation is None:
                    raise ConversationGone(conversation_id)
                count = int(conversation["message_count"])
                stored = [
                    Message(uuid.uuid4().hex, conversation_id or "", m.role, m.content, m.tokens, m.finish_reason, now)
                    for m in messages
                ]
                actions.append(self._append_update(conversation_key, conversation_id or "", now, count, len(stored)))
                actions += [self._message_put(message, seq) for seq, message in enumerate(stored, start=count + 1)]
            final = with_message_id(result, stored)
            changes = job_changes(status, now, conversation_id=conversation_id, result=final, error=error)
            values = {f":{key}": value for key, value in changes.items()}
            values |= {":uid": user_id, ":queued": "queued", ":running": "running"}
            names = {f"#{key}": key for key in changes}
            job_update = {
                "TableName": self.table,
                "Key": _ser(job_key),
                "UpdateExpression": "SET " + ", ".join(f"#{key} = :{key}" for key in changes),
                "ConditionExpression": "user_id = :uid AND #status IN (:queued, :running)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": _ser(values),
            }
            try:
                await self._call("transact_write_items", TransactItems=[{"Update": job_update}, *actions])
            except ClientError as exc:
                if _code(exc) not in ("TransactionCanceledException", "TransactionConflictException"):
                    raise
                reasons = _reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return None  # finished meanwhile by another delivery
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
                continue  # the conversation changed under us (or no reasons given): read both again
            return await self.get_job(user_id, job_id)
        raise RuntimeError(f"could not finish job {job_id}: too much contention")

    def _append_update(self, key: dict[str, str], conversation_id: str, now: int, count: int, added: int) -> dict:
        """The conversation's side of an append: its new count, conditioned on the count read before."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": _ser(key),
                "UpdateExpression": "SET updated_at = :now, lsi1sk = :order, message_count = :new_count",
                "ConditionExpression": "message_count = :count",
                "ExpressionAttributeValues": _ser(
                    {
                        ":now": now,
                        ":order": _order_key(now, conversation_id),
                        ":count": count,
                        ":new_count": count + added,
                    }
                ),
            }
        }

    def _message_put(self, message: Message, seq: int) -> dict:
        item = {
            "pk": f"CONV#{message.conversation_id}",
            "sk": f"MSG#{seq:010d}",
            "id": message.id,
            "conversation_id": message.conversation_id,
            "role": message.role,
            "content": message.content,
            "tokens": message.tokens,
            "finish_reason": message.finish_reason,
            "created_at": message.created_at,
        }
        return {"Put": {"TableName": self.table, "Item": _ser(item), "ConditionExpression": "attribute_not_exists(pk)"}}

    async def delete_job(self, user_id: str, job_id: str) -> bool:
        try:
            await self._call(
                "delete_item",
                TableName=self.table,
                Key=_ser({"pk": f"JOB#{job_id}", "sk": "JOB"}),
                ConditionExpression="user_id = :uid",
                ExpressionAttributeValues=_ser({":uid": user_id}),
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # versions of a user's data (validate cached reads in every process)

    async def user_version(self, user_id: str) -> int:
        item = await self._get(f"USER#{user_id}", "VERSION")
        return int(item["version"]) if item else 0

    async def bump_user_version(self, user_id: str) -> None:
        await self._call(
            "update_item",
            TableName=self.table,
            Key=_ser({"pk": f"USER#{user_id}", "sk": "VERSION"}),
            UpdateExpression="ADD version :one",
            ExpressionAttributeValues=_ser({":one": 1}),
        )

    # conversation search: vectors in the owner's partition (USER#<uid> / VEC#<cid>#<key>)

    async def _query_all(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a query, following its pages (raw, not deserialized)."""
        items: list[dict[str, Any]] = []
        while True:
            response = await self._call("query", TableName=self.table, ConsistentRead=True, **kwargs)
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def _vector_keys(self, user_id: str, conversation_id: str) -> list[dict[str, Any]]:
        return await self._query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :vec)",
            ExpressionAttributeValues=_ser({":pk": f"USER#{user_id}", ":vec": f"VEC#{conversation_id}#"}),
            ProjectionExpression="pk, sk",
        )

    async def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            while pending:
                response = await self._call("batch_write_item", RequestItems={self.table: pending})
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if pending:
                    await asyncio.sleep(0.05)

    async def index_states(self, user_id: str) -> list[IndexState]:
        items = await self._query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :conv)",
            ExpressionAttributeValues=_ser({":pk": f"USER#{user_id}", ":conv": "CONV#"}),
        )
        states = []
        for item in map(_de, items):
            indexed = item.get("search_messages")
            states.append(IndexState(_conversation(item), item.get("search_title"), int(indexed or 0)))
        return states

    async def put_search_chunks(
        self, user_id: str, conversation_id: str, chunks: Sequence[SearchChunk], *, title: str, messages: int
    ) -> bool:
        if await self.get_conversation(user_id, conversation_id) is None:
            return False
        puts = [
            {
                "PutRequest": {
                    "Item": _ser(
                        {
                            "pk": f"USER#{user_id}",
                            "sk": f"VEC#{conversation_id}#{chunk.key}",
                            "conversation_id": conversation_id,
                            "key": chunk.key,
                            "snippet": chunk.snippet,
                            "vector": chunk.vector,
                        }
                    )
                }
            }
            for chunk in chunks
        ]
        await self._batch_write(puts)
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}),
                UpdateExpression="SET search_title = :title, search_messages = :messages",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_ser({":title": title, ":messages": messages}),
            )
        except ClientError as exc:
            if _code(exc) not in ("ConditionalCheckFailedException", "TransactionConflictException"):
                raise
            if _code(exc) == "TransactionConflictException":
                return True  # the vectors are stored; the next search sees the conversation as stale and retries
            await self.delete_search_chunks(user_id, conversation_id)  # deleted meanwhile: keep nothing of it
            return False
        return True

    async def search_vectors(self, user_id: str, conversation_ids: Sequence[str] | None = None) -> VectorRows:
        prefixes = ["VEC#"] if conversation_ids is None else [f"VEC#{c}#" for c in conversation_ids]
        items: list[dict[str, Any]] = []
        for prefix in prefixes:
            items += await self._query_all(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :vec)",
                ExpressionAttributeValues=_ser({":pk": f"USER#{user_id}", ":vec": prefix}),
                ProjectionExpression="conversation_id, #key, vector",
                ExpressionAttributeNames={"#key": "key"},
            )
        return VectorRows(
            [item["conversation_id"]["S"] for item in items],
            [item["key"]["S"] for item in items],
            b"".join(item["vector"]["B"] for item in items),
        )

    async def search_snippets(self, user_id: str, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        keys = [_ser({"pk": f"USER#{user_id}", "sk": f"VEC#{cid}#{key}"}) for cid, key in dict.fromkeys(refs)]
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys[start : start + 100],
                    "ProjectionExpression": "conversation_id, #key, snippet",
                    "ExpressionAttributeNames": {"#key": "key"},
                    "ConsistentRead": True,
                }
            }
            while request:
                response = await self._call("batch_get_item", RequestItems=request)
                for item in map(_de, response.get("Responses", {}).get(self.table, [])):
                    found[(item["conversation_id"], item["key"])] = item["snippet"]
                request = response.get("UnprocessedKeys") or {}
                if request:
                    await asyncio.sleep(0.05)
        return found

    async def delete_search_chunks(self, user_id: str, conversation_id: str) -> None:
        keys = await self._vector_keys(user_id, conversation_id)
        await self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys])
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=_ser({"pk": f"USER#{user_id}", "sk": f"CONV#{conversation_id}"}),
                UpdateExpression="REMOVE search_title, search_messages",
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":  # the conversation is gone: nothing to reset
                raise
