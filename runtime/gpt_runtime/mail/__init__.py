"""Account mail (email verification, password reset): one EmailSender per transport, and the Outbox
that delivers in the background so no request waits on, fails with, or is timed by the mail server.

Transports (GPT_MAIL_TRANSPORT): `smtp` (GPT_SMTP_URL, STARTTLS or implicit TLS, with auth), `ses`
(Amazon SES through boto3), `log` (local development: each mail is printed to the server log, never
sent to an HTTP client). The default picks `smtp` when GPT_SMTP_URL is set, else `log`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from gpt_runtime.settings import RuntimeSettings

log = logging.getLogger("gpt_runtime.mail")


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str


class EmailSender(Protocol):
    """Delivers one mail now; raises on failure (the Outbox retries)."""

    async def send(self, to: str, subject: str, body: str) -> None: ...


def open_email_sender(settings: RuntimeSettings) -> EmailSender:
    """The transport the settings name (see the module docstring)."""
    transport = settings.mail_transport or ("smtp" if settings.smtp_url else "log")
    if transport == "smtp":
        from gpt_runtime.mail.smtp import SMTPEmailSender

        if settings.smtp_url is None:
            raise ValueError("GPT_MAIL_TRANSPORT=smtp needs GPT_SMTP_URL")
        return SMTPEmailSender.from_url(settings.smtp_url.get_secret_value(), sender=settings.mail_from)
    if transport == "ses":
        from gpt_runtime.mail.ses import SESEmailSender

        return SESEmailSender(
            sender=settings.mail_from,
            region=settings.aws_region or None,
            endpoint_url=settings.aws_endpoint_url or None,
        )
    from gpt_runtime.mail.log_sender import LogEmailSender

    log.warning(
        "no mail transport configured (GPT_SMTP_URL or GPT_MAIL_TRANSPORT=ses): account mails, with their"
        " one-time links, are printed to this log instead of being sent"
    )
    return LogEmailSender()
