"""Account mail over real SMTP (Mailpit, STARTTLS + auth): the links in the mails verify and reset; no answer
carries a token; forgot-password looks the same for every address; a mail outage fails no request."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import statistics
import time
import urllib.parse
import uuid

import httpx
import pytest
from gpt_runtime.mail.smtp import SMTPEmailSender, parse_smtp_url

from ..conftest import RuntimeServer, free_port, start_runtime, stop_runtime
from .conftest import Mailpit, start_mailpit, stop

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


def _address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}@example.com"


def _follow(server: RuntimeServer, mail: dict, path: str) -> str:
    """Open the mail's link on the runtime (the public URL stands for it) and return the link's token."""
    link = next(word for word in mail["Text"].split() if word.startswith("https://chat.example.com/"))
    parts = urllib.parse.urlsplit(link)
    assert parts.path == path
    with server.client() as client:
        page = client.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    return urllib.parse.parse_qs(parts.query)["token"][0]


def test_signup_mails_a_link_that_verifies_the_address(mailed: RuntimeServer, mailpit: Mailpit):
    email = _address("ann")
    with mailed.client() as client:
        signup = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
        assert signup.status_code == 201 and set(signup.json()) == {"user"}
        (mail,) = mailpit.wait_for(email, "Verify")
        assert mail["From"]["Address"] == "no-reply@gpt.example.com"
        token = _follow(mailed, mail, "/auth/verify-email")
        assert token not in signup.text
        verified = client.post("/auth/verify-email", json={"token": token})
        assert verified.status_code == 200 and verified.json()["email_verified"] is True
    assert token not in mailed.logs()  # a real transport: the mail is not printed


def test_an_admin_address_becomes_admin_through_its_mailed_link(mailed: RuntimeServer, mailpit: Mailpit):
    with mailed.client(mailed.signup_and_login("chief@example.com")) as api:
        assert api.get("/auth/me").json()["role"] == "free"
        (mail,) = mailpit.wait_for("chief@example.com", "Verify")
        with mailed.client() as client:
            assert client.post("/auth/verify-email", json={"token": _follow(mailed, mail, "/auth/verify-email")})
        assert api.get("/auth/me").json() | {"id": None, "created_at": None} == {
            "id": None,
            "email": "chief@example.com",
            "role": "admin",
            "email_verified": True,
            "created_at": None,
        }


def test_forgot_password_answers_alike_and_mails_only_real_accounts(mailed: RuntimeServer, mailpit: Mailpit):
    email, nobody = _address("bob"), _address("nobody")
    mailed.signup_and_login(email, "old-password-1")
    with mailed.client() as client:
        known = client.post("/auth/forgot-password", json={"email": email})
        unknown = client.post("/auth/forgot-password", json={"email": nobody})
        assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
        assert known.status_code == 202
        (mail,) = mailpit.wait_for(email, "Reset")
        assert mailpit.messages_to(nobody) == []
        token = _follow(mailed, mail, "/auth/reset-password")
        assert token not in known.text
        reset = client.post("/auth/reset-password", json={"token": token, "new_password": "new-password-2"})
        assert reset.status_code == 200, reset.text
        assert client.post("/auth/login", json={"email": email, "password": "new-password-2"}).status_code == 200
        assert client.post("/auth/login", json={"email": email, "password": "old-password-1"}).status_code == 401


def test_forgot_password_takes_as_long_for_unknown_addresses(mailed: RuntimeServer):
    """The lookup and the mail happen after the answer, so known and unknown addresses cost the same."""
    email = _address("timed")
    mailed.signup_and_login(email)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    with mailed.client() as client:
        client.post("/auth/forgot-password", json={"email": _address("warmup")})
        for _ in range(25):
            for kind, address in (("known", email), ("unknown", _address("ghost"))):
                started = time.perf_counter()
                assert client.post("/auth/forgot-password", json={"email": address}).status_code == 202
                timings[kind].append(time.perf_counter() - started)
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    # Generous bounds (a shared CI machine): a lookup plus an SMTP session on the request path costs far more.
    assert known < 2 * unknown + 0.005 and unknown < 2 * known + 0.005, (known, unknown)


def test_an_address_gets_a_bounded_number_of_mails(mailed: RuntimeServer, mailpit: Mailpit):
    email = _address("bombed")  # GPT_MAIL_PER_ADDRESS_PER_HOUR=3: the verification mail and two resets
    mailed.signup_and_login(email)
    with mailed.client() as client:
        for _ in range(6):
            assert client.post("/auth/forgot-password", json={"email": email}).status_code == 202
    mailpit.wait_for(email, "", count=3)
    time.sleep(1.0)
    assert len(mailpit.messages_to(email)) == 3


def test_a_mail_outage_fails_no_request(tmp_path):
    """The mail server is down: signup and forgot-password still answer at once; the log says what failed."""
    runtime = start_runtime(
        tmp_path, GPT_SMTP_URL=f"smtps://u:secret-pw@127.0.0.1:{free_port()}", GPT_RATE_LIMIT_ANONYMOUS="0"
    )
    try:
        email = _address("outage")
        with runtime.client() as client:
            started = time.perf_counter()
            assert client.post("/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 201
            assert client.post("/auth/forgot-password", json={"email": email}).status_code == 202
            assert time.perf_counter() - started < 2
        deadline = time.monotonic() + 15
        while "mail could not be sent" not in runtime.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "mail could not be sent" in runtime.logs()
        assert "secret-pw" not in runtime.logs()
    finally:
        stop_runtime(runtime)


# the sender on its own, against Mailpit


def _sender(url: str, mailpit: Mailpit) -> SMTPEmailSender:
    return SMTPEmailSender(
        parse_smtp_url(url), sender="no-reply@gpt.example.com", context=ssl.create_default_context(cafile=mailpit.cert)
    )


def test_implicit_tls_delivers(tmp_path):
    server = start_mailpit(tmp_path, implicit_tls=True)
    try:
        email = _address("smtps")
        asyncio.run(_sender(server.smtp_url(scheme="smtps"), server).send(email, "Hello", "over TLS"))
        (mail,) = server.wait_for(email, "Hello")
        assert mail["Text"].strip() == "over TLS"
    finally:
        stop(server.process)


def test_a_wrong_password_or_an_untrusted_certificate_is_an_error(mailpit: Mailpit):
    with pytest.raises(smtplib.SMTPAuthenticationError):
        asyncio.run(_sender(mailpit.smtp_url(password="wrong"), mailpit).send(_address("x"), "s", "b"))
    untrusted = SMTPEmailSender(parse_smtp_url(mailpit.smtp_url()), sender="no-reply@gpt.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(untrusted.send(_address("x"), "s", "b"))
    plain = _sender(f"smtp://127.0.0.1:{mailpit.smtp_port}?starttls=false", mailpit)
    with pytest.raises(smtplib.SMTPException):  # Mailpit, like a real relay here, requires STARTTLS
        asyncio.run(plain.send(_address("x"), "s", "b"))
    assert httpx.get(f"{mailpit.api}/readyz").status_code == 200
