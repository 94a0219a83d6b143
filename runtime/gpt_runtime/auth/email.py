"""Moved to gpt_runtime.mail; these names stay importable from here."""

from gpt_runtime.mail import Email, EmailSender
from gpt_runtime.mail.log_sender import LogEmailSender

__all__ = ["Email", "EmailSender", "LogEmailSender"]
