"""Sending account emails. Real deployments plug in an EmailSender; development logs a notice."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("gpt_runtime.email")


class EmailSender(Protocol):
    """Delivers one account email; the link carries a one-time token."""

    async def send(self, to: str, subject: str, body: str) -> None: ...


class LogEmailSender:
    """Development sender: logs that an email went out, never its token-bearing body."""

    def __init__(self) -> None:
        self.outbox: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.outbox.append((to, subject, body))
        log.info("email queued", extra={"to_domain": to.rsplit("@", 1)[-1], "subject": subject})
