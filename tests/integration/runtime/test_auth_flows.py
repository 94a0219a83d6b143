"""Account flows a user goes through: verify email, forget and reset a password, refresh tokens."""

from __future__ import annotations

import re
import urllib.parse
import uuid

import pytest

from .conftest import mailed_token

pytestmark = pytest.mark.integration


def test_verify_email_with_the_mailed_link(server):
    """No token in the answer: the link goes by mail (here: printed to the server log, no transport set)."""
    with server.client() as anon:
        signup = anon.post("/auth/signup", json={"email": "Verify.Me@Example.com ", "password": "password-123"})
        assert signup.status_code == 201
        assert set(signup.json()) == {"user"}  # no verification token for whoever signs up
        assert signup.json()["user"]["email"] == "verify.me@example.com"
        assert signup.json()["user"]["email_verified"] is False
        mail = server.wait_for_mail("verify.me@example.com", "Verify")
        token = mailed_token(mail)
        assert token not in signup.text
        link = re.search(r"https?://\S+", mail["body"]).group(0)
        page = anon.get(urllib.parse.urlsplit(link).path + "?" + urllib.parse.urlsplit(link).query)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert token not in page.text  # the page reads the token from its address, echoes nothing
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert anon.get("/auth/me").status_code == 401
        verified = anon.post("/auth/verify-email", json={"token": token})
        assert verified.status_code == 200 and verified.json()["email_verified"] is True
        tampered = token[:-4] + "AAAA"
        assert anon.post("/auth/verify-email", json={"token": tampered}).status_code == 400
        login = anon.post("/auth/login", json={"email": "VERIFY.ME@example.com", "password": "password-123"})
        assert login.status_code == 200
    with server.client(login.json()["access_token"]) as api:
        assert api.get("/auth/me").json()["email_verified"] is True


def test_forgot_and_reset_password(server):
    email = "forgetful@example.com"
    old_access = server.signup_and_login(email, "old-password-1")
    with server.client() as anon:
        old_refresh = anon.post("/auth/login", json={"email": email, "password": "old-password-1"}).json()[
            "refresh_token"
        ]
        unknown = anon.post("/auth/forgot-password", json={"email": "nobody@example.com"})
        known = anon.post("/auth/forgot-password", json={"email": email})
        assert unknown.status_code == known.status_code == 202
        assert unknown.json() == known.json() == {"status": "if the account exists, a reset email was sent"}
        reset_token = mailed_token(server.wait_for_mail(email, "Reset"))
        assert server.mails("nobody@example.com") == []

        weak = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "short"})
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        done = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "new-password-2"})
        assert done.status_code == 200 and reset_token not in done.text

        assert anon.post("/auth/login", json={"email": email, "password": "old-password-1"}).status_code == 401
        assert anon.post("/auth/login", json={"email": email, "password": "new-password-2"}).status_code == 200
        reused = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "third-password-3"})
        assert reused.status_code == 400 and reused.json()["error"]["code"] == "invalid_token"
        # Sessions from before the reset are over: no refresh, and the access token is refused too.
        assert anon.post("/auth/refresh", json={"refresh_token": old_refresh}).status_code == 401
    with server.client(old_access) as api:
        refused = api.get("/auth/me")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"


def test_reset_link_proves_the_address(server):
    """Completing a mailed reset verifies the email as the verification link would."""
    email = f"reset-verifies-{uuid.uuid4().hex[:6]}@example.com"
    server.signup_and_login(email, "old-password-1")
    with server.client() as anon:
        anon.post("/auth/forgot-password", json={"email": email})
        token = mailed_token(server.wait_for_mail(email, "Reset"))
        assert anon.post("/auth/reset-password", json={"token": token, "new_password": "new-password-2"}).status_code
        login = anon.post("/auth/login", json={"email": email, "password": "new-password-2"}).json()
    with server.client(login["access_token"]) as api:
        assert api.get("/auth/me").json()["email_verified"] is True


def test_refresh_issues_working_tokens(server):
    email = "refresher@example.com"
    server.signup_and_login(email)
    with server.client() as anon:
        tokens = anon.post("/auth/login", json={"email": email, "password": "correct horse battery"}).json()
        refreshed = anon.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 200
        assert anon.post("/auth/refresh", json={"refresh_token": tokens["access_token"]}).status_code == 401
    with server.client(refreshed.json()["access_token"]) as api:
        assert api.get("/auth/me").json()["email"] == email


def test_signup_and_login_failures(server):
    with server.client() as anon:
        assert (
            anon.post("/auth/signup", json={"email": "dup@example.com", "password": "password-123"}).status_code == 201
        )
        dup = anon.post("/auth/signup", json={"email": "DUP@example.com", "password": "password-456"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "email_taken"
        bad_email = anon.post("/auth/signup", json={"email": "not-an-email", "password": "password-123"})
        assert bad_email.status_code == 400 and bad_email.json()["error"]["param"] == "email"
        weak = anon.post("/auth/signup", json={"email": "weak@example.com", "password": "123"})
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        wrong = anon.post("/auth/login", json={"email": "dup@example.com", "password": "password-999"})
        unknown = anon.post("/auth/login", json={"email": "ghost@example.com", "password": "password-999"})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()


def test_an_admin_address_is_admin_only_once_verified(server):
    """GPT_ADMIN_EMAILS grants admin to whoever proves the address, not to whoever signs up with it first."""
    with server.client(server.signup_and_login("Root@Example.com")) as api:
        me = api.get("/auth/me").json()
        assert (me["role"], me["email_verified"]) == ("free", False)
        assert api.get("/cache/stats").status_code == 403
        with server.client() as anon:
            token = mailed_token(server.wait_for_mail("root@example.com", "Verify"))
            verified = anon.post("/auth/verify-email", json={"token": token})
        assert verified.status_code == 200 and verified.json()["role"] == "admin"
        assert api.get("/auth/me").json()["role"] == "admin"  # the same session, now admin
        assert api.get("/cache/stats").status_code == 200
    with server.client(server.signup_and_login("someone-else@example.com", verify=True)) as api:
        assert api.get("/auth/me").json()["role"] == "free"
