"""Pick the mail transport from the settings: the only module in mail/ that knows the implementations."""

from __future__ import annotations

import logging

from gpt_runtime.mail import EmailSender
from gpt_runtime.settings import RuntimeSettings

log = logging.getLogger("gpt_runtime.mail")


def open_email_sender(settings: RuntimeSettings) -> EmailSender:
    """The transport the settings name (see mail/__init__.py's docstring)."""
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
