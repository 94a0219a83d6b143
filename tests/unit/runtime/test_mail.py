"""Mail parts without a server: SMTP URLs, the log sender's bound, the outbox's bound and retries."""

from __future__ import annotations

import asyncio
import logging

import pytest
from gpt_runtime.mail import Email
from gpt_runtime.mail.log_sender import LogEmailSender
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.mail.smtp import parse_smtp_url
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


def test_smtp_urls_pick_tls_port_and_credentials():
    submission = parse_smtp_url("smtp://user%40corp:p%3Ass@mail.example.com?starttls=true")
    assert (submission.host, submission.port, submission.starttls, submission.implicit_tls) == (
        "mail.example.com",
        587,
        True,
        False,
    )
    assert (submission.username, submission.password) == ("user@corp", "p:ss")
    implicit = parse_smtp_url("smtps://u:p@mail.example.com")
    assert (implicit.port, implicit.implicit_tls, implicit.starttls) == (465, True, False)
    relay = parse_smtp_url("smtp://relay.local:25?starttls=false")
    assert (relay.port, relay.starttls, relay.username) == (25, False, None)
    assert "p:ss" not in repr(submission)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("smtp://user:secret@mail.example.com?starttls=false", "credentials need TLS"),
        ("http://mail.example.com", "must start with smtp"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be"),
        ("smtp://mail.example.com?verify=false", "unknown GPT_SMTP_URL options"),
        ("smtp://", "no host"),
    ],
)
def test_unusable_smtp_urls_are_refused_without_echoing_the_password(url: str, message: str):
    with pytest.raises(ValueError, match=message) as raised:
        parse_smtp_url(url)
    assert "secret" not in str(raised.value)


def test_the_log_sender_keeps_only_the_latest_mails(caplog):
    sender = LogEmailSender(keep=3)
    with caplog.at_level(logging.WARNING, "gpt_runtime.mail"):
        for i in range(10):
            asyncio.run(sender.send(f"u{i}@example.com", "Verify", f"link {i}"))
    assert [m.to for m in sender.outbox] == ["u7@example.com", "u8@example.com", "u9@example.com"]
    printed = [r.mail for r in caplog.records if hasattr(r, "mail")]
    assert len(printed) == 10 and printed[-1]["body"] == "link 9"  # every mail is in the log


def test_a_full_outbox_drops_instead_of_growing():
    release = asyncio.Event()
    sent: list[str] = []

    class Slow:
        async def send(self, to: str, subject: str, body: str) -> None:
            await release.wait()
            sent.append(to)

    async def scenario() -> Outbox:
        outbox = Outbox(Slow(), max_queued=2, workers=1)

        def mail(i: int):
            async def compose() -> Email:
                return Email(f"u{i}@example.com", "s", "b")

            return compose

        for i in range(6):  # at once: two fit in the queue, four are dropped
            outbox.submit(mail(i))
        await asyncio.sleep(0.05)
        release.set()
        await outbox.close()
        return outbox

    outbox = asyncio.run(scenario())
    assert outbox.dropped == 4 and len(sent) == 2


def test_the_outbox_retries_a_failing_transport_then_gives_up():
    attempts: list[int] = []

    class Flaky:
        async def send(self, to: str, subject: str, body: str) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError("connection refused")

    class Down:
        async def send(self, to: str, subject: str, body: str) -> None:
            raise OSError("connection refused")

    async def run(sender) -> Outbox:
        outbox = Outbox(sender, attempts=3, retry_base_s=0.001)

        async def compose() -> Email:
            return Email("a@example.com", "s", "b")

        outbox.submit(compose)
        await outbox.drain()
        await outbox.close()
        return outbox

    flaky = asyncio.run(run(Flaky()))
    assert (flaky.sent, flaky.failed, len(attempts)) == (1, 0, 3)
    down = asyncio.run(run(Down()))
    assert (down.sent, down.failed) == (0, 1)


def test_mail_transport_defaults_to_smtp_when_a_url_is_set(monkeypatch):
    from gpt_runtime.mail.factory import open_email_sender
    from gpt_runtime.mail.smtp import SMTPEmailSender

    assert isinstance(open_email_sender(RuntimeSettings()), LogEmailSender)
    monkeypatch.setenv("GPT_SMTP_URL", "smtps://u:p@mail.example.com")
    assert isinstance(open_email_sender(RuntimeSettings()), SMTPEmailSender)
    monkeypatch.setenv("GPT_MAIL_TRANSPORT", "log")
    assert isinstance(open_email_sender(RuntimeSettings()), LogEmailSender)


def test_forwarded_allow_ips_are_checked_at_start(monkeypatch):
    monkeypatch.setenv("GPT_FORWARDED_ALLOW_IPS", "10.0.0.0/8, 127.0.0.1")
    assert RuntimeSettings().forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert RuntimeSettings(forwarded_allow_ips="").forwarded_allow_ips == []
    monkeypatch.setenv("GPT_FORWARDED_ALLOW_IPS", "10.0.0.0/33")
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        RuntimeSettings()


def test_account_mail_goes_out_when_the_mail_cap_backend_is_down():
    from gpt_runtime.auth.account_mail import AccountMail

    sent: list[Email] = []

    class Recorder:
        async def send(self, to: str, subject: str, body: str) -> None:
            sent.append(Email(to, subject, body))

    class DownCounter:
        async def hit(self, key: str, limit: int, window_s: int, cost: int = 1):
            raise ConnectionError("redis is down")

    async def scenario() -> None:
        outbox = Outbox(Recorder())
        mail = AccountMail(outbox, RuntimeSettings(public_url="https://chat.example.com/"), DownCounter())
        mail.verification("ann@example.com", "tok.en")
        await outbox.drain()
        await outbox.close()

    asyncio.run(scenario())
    (email,) = sent
    assert email.to == "ann@example.com"
    assert "https://chat.example.com/auth/verify-email?token=tok.en" in email.body
