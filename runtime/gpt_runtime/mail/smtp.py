"""SMTP delivery with TLS and authentication, from one URL.

    smtp://USER:PASSWORD@HOST:PORT?starttls=true    submission with STARTTLS (default port 587)
    smtps://USER:PASSWORD@HOST:PORT                 implicit TLS (default port 465)
    smtp://HOST:25?starttls=false                   plain SMTP: only without credentials (a local relay)

User and password are URL-encoded. Server certificates are verified against the system's trust store
(SSL_CERT_FILE names another bundle). Credentials are never sent over an unencrypted connection.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SMTPConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    timeout_s: float

    def __repr__(self) -> str:  # never show the password
        return f"SMTPConfig(host={self.host!r}, port={self.port}, tls={self.implicit_tls or self.starttls})"


def parse_smtp_url(url: str) -> SMTPConfig:
    """Parse GPT_SMTP_URL; raises ValueError (without echoing the password) when it is unusable."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("GPT_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("GPT_SMTP_URL has no host")
    query = {key: values[-1].lower() for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        raise ValueError(f"unknown GPT_SMTP_URL options: {', '.join(sorted(unknown))}")
    implicit = parts.scheme == "smtps"
    starttls_value = query.get("starttls", "true")
    if starttls_value not in _TRUE | _FALSE:
        raise ValueError("GPT_SMTP_URL's starttls must be true or false")
    starttls = not implicit and starttls_value in _TRUE
    try:
        port = parts.port or (465 if implicit else 587 if starttls else 25)
        timeout_s = float(query.get("timeout", "10"))
    except ValueError as exc:
        raise ValueError("GPT_SMTP_URL has a bad port or timeout") from exc
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and not (implicit or starttls):
        raise ValueError("GPT_SMTP_URL: credentials need TLS (smtps:// or starttls=true)")
    return SMTPConfig(parts.hostname, port, implicit, starttls, username, password, timeout_s)


class SMTPEmailSender:
    """Sends each mail over its own SMTP session (account mail is rare; no pool to go stale)."""

    def __init__(self, config: SMTPConfig, *, sender: str, context: ssl.SSLContext | None = None):
        self.config = config
        self.sender = sender
        self.context = context or ssl.create_default_context()

    @classmethod
    def from_url(cls, url: str, *, sender: str) -> SMTPEmailSender:
        return cls(parse_smtp_url(url), sender=sender)

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=parseaddr(self.sender)[1].rpartition("@")[2] or None)
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        c = self.config
        if c.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=self.context)
        else:
            client = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
        with client:
            client.ehlo()
            if c.starttls:
                client.starttls(context=self.context)  # raises SMTPNotSupportedError if the server lacks it
                client.ehlo()
            if c.username:
                client.login(c.username, c.password or "")
            client.send_message(message)
