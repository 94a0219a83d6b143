"""Account mail through Amazon SES (moto's server): the verification link arrives and works."""

from __future__ import annotations

import time
import uuid

import boto3
import httpx
import pytest

from ..aws_emulator import moto_endpoint
from ..conftest import mailed_token, start_runtime, stop_runtime

pytestmark = pytest.mark.integration
SENDER = "no-reply@gpt.example.com"


def _sent_to(endpoint: str, address: str) -> list[dict]:
    """The mails moto's SES accepted for `address` (its model data: what SES would have delivered)."""
    messages = httpx.get(f"{endpoint}/moto-api/data.json", timeout=10).json()["ses"]["Message"]
    return [m for m in messages if address in m["destinations"]["ToAddresses"]]


def test_signup_mail_goes_through_ses(tmp_path):
    endpoint = moto_endpoint()
    boto3.client("ses", region_name="us-east-1", endpoint_url=endpoint).verify_email_identity(EmailAddress=SENDER)
    runtime = start_runtime(
        tmp_path,
        GPT_MAIL_TRANSPORT="ses",
        GPT_MAIL_FROM=f"GPT <{SENDER}>",
        GPT_AWS_REGION="us-east-1",
        GPT_AWS_ENDPOINT_URL=endpoint,
        GPT_PUBLIC_URL="https://chat.example.com",
    )
    try:
        email = f"ses-{uuid.uuid4().hex[:6]}@example.com"
        with runtime.client() as client:
            signup = client.post("/auth/signup", json={"email": email, "password": "correct horse battery"})
            assert signup.status_code == 201 and set(signup.json()) == {"user"}
            deadline = time.monotonic() + 15
            while not _sent_to(endpoint, email) and time.monotonic() < deadline:
                time.sleep(0.1)
            (mail,) = _sent_to(endpoint, email)
            assert mail["source"] == f"GPT <{SENDER}>" and mail["subject"] == "Verify your email address"
            assert "https://chat.example.com/auth/verify-email?token=" in mail["body"]
            token = mailed_token(mail)
            verified = client.post("/auth/verify-email", json={"token": token})
            assert verified.status_code == 200 and verified.json()["email_verified"] is True
        assert token not in runtime.logs()
    finally:
        stop_runtime(runtime)
