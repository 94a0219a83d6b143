"""Local development without a mail server: every mail goes to the server log, never to a client."""

from __future__ import annotations

import logging
from collections import deque

from gpt_runtime.mail import Email

log = logging.getLogger("gpt_runtime.mail")


class LogEmailSender:
    """Prints each mail (its one-time link included) to the log; keeps only the last `keep` in memory."""

    def __init__(self, keep: int = 100) -> None:
        self.outbox: deque[Email] = deque(maxlen=keep)

    async def send(self, to: str, subject: str, body: str) -> None:
        self.outbox.append(Email(to, subject, body))
        # The body rides in an extra field: the message redaction (logging_setup.RedactFilter) would
        # blank the link's token, and the point of this sender is that a developer can follow it.
        log.warning(
            "mail not sent (no mail transport): printed here",
            extra={"mail": {"to": to, "subject": subject, "body": body}},
        )
