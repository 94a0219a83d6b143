"""SQS job queue: visibility timeout, and a dead-letter queue fed by SQS's own redrive policy.

URL: sqs://QUEUE_NAME?region=us-east-1&endpoint_url=http://127.0.0.1:5000&max_receives=3&visibility_timeout=300
The queue and its `<name>-dlq` are created when missing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from gpt_runtime.backends import Delivery


class SQSJobQueue:
    """JobQueue on Amazon SQS (or any API-compatible server)."""

    def __init__(
        self,
        queue_name: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        visibility_timeout_s: int = 300,
        max_receives: int = 3,
    ):
        self.queue_name = queue_name
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receives = max_receives
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)
        self.queue_url: str | None = None
        self.dlq_url: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SQSJobQueue:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        return cls(
            parts.netloc or parts.path.strip("/"),
            region=query.get("region", "us-east-1"),
            endpoint_url=query.get("endpoint_url"),
            visibility_timeout_s=int(query.get("visibility_timeout", 300)),
            max_receives=int(query.get("max_receives", 3)),
        )

    def _ensure_queues(self) -> None:
        if self.queue_url:
            return
        dlq_url = self.client.create_queue(QueueName=f"{self.queue_name}-dlq")["QueueUrl"]
        dlq_arn = self.client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receives)})
        self.queue_url = self.client.create_queue(
            QueueName=self.queue_name,
            Attributes={
                "VisibilityTimeout": str(self.visibility_timeout_s),
                "MessageRetentionPeriod": str(24 * 3600),
                "RedrivePolicy": redrive,
            },
        )["QueueUrl"]
        self.dlq_url = dlq_url

    def _url(self) -> str:
        """The queue's URL, known once _ensure_queues ran (_call runs it before every call that reads this)."""
        assert self.queue_url is not None, "the queues are made before they are used"
        return self.queue_url

    def _dlq_url(self) -> str:
        assert self.dlq_url is not None, "the queues are made before they are used"
        return self.dlq_url

    async def _call(self, fn, /, **kwargs):
        await asyncio.to_thread(self._ensure_queues)
        return await asyncio.to_thread(fn, **kwargs)

    async def enqueue(self, body: str) -> None:
        await self._call(lambda: self.client.send_message(QueueUrl=self._url(), MessageBody=body))

    async def receive(self, wait_s: float) -> Delivery | None:
        def receive() -> Mapping[str, Any]:
            return self.client.receive_message(
                QueueUrl=self._url(),
                MaxNumberOfMessages=1,
                WaitTimeSeconds=max(0, min(20, int(wait_s))),
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )

        messages = (await self._call(receive)).get("Messages", [])
        if not messages:
            return None
        message = messages[0]
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        return Delivery(message["Body"], message["ReceiptHandle"], count)

    async def extend(self, delivery: Delivery) -> None:
        """ChangeMessageVisibility: the message stays hidden for another visibility timeout."""

        def renew() -> None:
            self.client.change_message_visibility(
                QueueUrl=self._url(), ReceiptHandle=delivery.receipt, VisibilityTimeout=self.visibility_timeout_s
            )

        await self._call(renew)

    async def ack(self, delivery: Delivery) -> None:
        await self._call(lambda: self.client.delete_message(QueueUrl=self._url(), ReceiptHandle=delivery.receipt))

    async def retry(self, delivery: Delivery) -> None:
        """Visible again at once; SQS moves it to the DLQ after max_receives deliveries."""

        def release() -> None:
            self.client.change_message_visibility(
                QueueUrl=self._url(), ReceiptHandle=delivery.receipt, VisibilityTimeout=0
            )

        await self._call(release)

    async def depth(self) -> int:
        """ApproximateNumberOfMessages: visible messages waiting for a worker."""

        def count() -> int:
            attributes = self.client.get_queue_attributes(
                QueueUrl=self._url(), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(attributes["ApproximateNumberOfMessages"])

        return await self._call(count)

    async def dead_letters(self) -> list[str]:
        def peek() -> list[str]:
            response = self.client.receive_message(
                QueueUrl=self._dlq_url(), MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
            )
            return [m["Body"] for m in response.get("Messages", [])]

        return await self._call(peek)

    async def ping(self) -> bool:
        try:
            await self._call(lambda: self.client.get_queue_attributes(QueueUrl=self._url()))
            return True
        except (BotoCoreError, ClientError, OSError):
            return False

    async def close(self) -> None:
        return None
