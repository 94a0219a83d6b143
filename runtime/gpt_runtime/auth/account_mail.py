"""The mails of local accounts: a verification link after signup, a reset link on request.

Each mail is composed and sent in the background (mail.outbox.Outbox): the caller's answer never holds a
token, never depends on whether the account exists, and never waits for the mail server. An address gets
at most GPT_MAIL_PER_ADDRESS_PER_HOUR mails, however many clients ask (no mail bombing through us).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from gpt_runtime.backends import WindowCounter
from gpt_runtime.mail import Email
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.settings import RuntimeSettings

HOUR_S = 3600
log = logging.getLogger("gpt_runtime.mail")


def public_url(settings: RuntimeSettings) -> str:
    """Where users reach this API: GPT_PUBLIC_URL, else the address it listens on."""
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


class AccountMail:
    """Queues account mails on the Outbox."""

    def __init__(self, outbox: Outbox, settings: RuntimeSettings, counter: WindowCounter | None = None):
        self.outbox = outbox
        self.settings = settings
        self.counter = counter
        self.base_url = public_url(settings)
        if not settings.public_url and settings.host in ("0.0.0.0", "::"):
            log.warning("GPT_PUBLIC_URL is not set: links in account mail point at %s", self.base_url)
        self.valid_for = _duration(settings.email_token_ttl_s)

    async def _allowed(self, email: str) -> bool:
        limit = self.settings.mail_per_address_per_hour
        if self.counter is None or limit <= 0:
            return True
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]  # no addresses in counter keys
        try:
            return (await self.counter.hit(f"mail:{digest}", limit, HOUR_S)).allowed
        except Exception:  # the counter's backend is down: send rather than lose account mail
            log.warning("mail cap unavailable; sending without it", exc_info=True)
            return True

    def verification(self, email: str, token: str) -> None:
        async def compose() -> Email | None:
            if not await self._allowed(email):
                return None
            link = f"{self.base_url}/auth/verify-email?token={quote(token)}"
            body = (
                f"Confirm that {email} is your address by opening this link:\n\n{link}\n\n"
                f"The link is valid for {self.valid_for}. If you did not sign up, ignore this mail:"
                " the account stays unverified.\n"
            )
            return Email(email, "Verify your email address", body)

        self.outbox.submit(compose)

    def password_reset(self, email: str, token_for: Callable[[], Awaitable[str | None]]) -> None:
        """`token_for` looks the account up and issues its token (None: no account, no mail)."""

        async def compose() -> Email | None:
            token = await token_for()
            if token is None or not await self._allowed(email):
                return None
            link = f"{self.base_url}/auth/reset-password?token={quote(token)}"
            body = (
                f"Someone asked to reset the password of {email}. To choose a new one, open:\n\n{link}\n\n"
                f"The link works once and for {self.valid_for}. If you did not ask, ignore this mail:"
                " your password stays as it is.\n"
            )
            return Email(email, "Reset your password", body)

        self.outbox.submit(compose)


def _duration(seconds: int) -> str:
    if seconds % HOUR_S == 0:
        hours = seconds // HOUR_S
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
