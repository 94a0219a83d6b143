"""Amazon SES delivery (SESv2 SendEmail) through boto3's usual credential chain."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config


class SESEmailSender:
    """Sends from a verified SES identity (GPT_MAIL_FROM); region and endpoint from the AWS settings."""

    def __init__(self, *, sender: str, region: str | None = None, endpoint_url: str | None = None):
        self.sender = sender
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        self.client: Any = boto3.session.Session().client(
            "sesv2", region_name=region, endpoint_url=endpoint_url, config=config
        )

    async def send(self, to: str, subject: str, body: str) -> None:
        await asyncio.to_thread(
            self.client.send_email,
            FromEmailAddress=self.sender,
            Destination={"ToAddresses": [to]},
            Content={
                "Simple": {
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
                }
            },
        )
