"""Account mail (email verification, password reset): one EmailSender per transport, and the Outbox
that delivers in the background so no request waits on, fails with, or is timed by the mail server.

Transports (GPT_MAIL_TRANSPORT): `smtp` (GPT_SMTP_URL, STARTTLS or implicit TLS, with auth), `ses`
(Amazon SES through boto3), `log` (local development: each mail is printed to the server log, never
sent to an HTTP client). The default picks `smtp` when GPT_SMTP_URL is set, else `log`;
mail/factory.py picks the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str


class EmailSender(Protocol):
    """Delivers one mail now; raises on failure (the Outbox retries)."""

    async def send(self, to: str, subject: str, body: str) -> None: ...
