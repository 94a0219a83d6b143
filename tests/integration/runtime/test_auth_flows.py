"""Account flows a user goes through: verify email, forget and reset a password, refresh tokens."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_verify_email_with_the_dev_token(server):
    with server.client() as anon:
        signup = anon.post("/auth/signup", json={"email": "Verify.Me@Example.com ", "password": "password-123"}).json()
        assert signup["user"]["email"] == "verify.me@example.com"
        assert signup["user"]["email_verified"] is False
        verified = anon.post("/auth/verify-email", json={"token": signup["verification_token"]})
        assert verified.status_code == 200 and verified.json()["email_verified"] is True
        tampered = signup["verification_token"][:-4] + "AAAA"
        assert anon.post("/auth/verify-email", json={"token": tampered}).status_code == 400
        login = anon.post("/auth/login", json={"email": "VERIFY.ME@example.com", "password": "password-123"})
        assert login.status_code == 200
    with server.client(login.json()["access_token"]) as api:
        assert api.get("/auth/me").json()["email_verified"] is True


def test_forgot_and_reset_password(server):
    email = "forgetful@example.com"
    server.signup_and_login(email, "old-password-1")
    with server.client() as anon:
        old_refresh = anon.post("/auth/login", json={"email": email, "password": "old-password-1"}).json()[
            "refresh_token"
        ]
        unknown = anon.post("/auth/forgot-password", json={"email": "nobody@example.com"})
        known = anon.post("/auth/forgot-password", json={"email": email})
        assert unknown.status_code == known.status_code == 202
        assert unknown.json()["status"] == known.json()["status"]  # no account probing
        assert unknown.json()["token"] is None
        reset_token = known.json()["token"]

        weak = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "short"})
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        done = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "new-password-2"})
        assert done.status_code == 200

        assert anon.post("/auth/login", json={"email": email, "password": "old-password-1"}).status_code == 401
        assert anon.post("/auth/login", json={"email": email, "password": "new-password-2"}).status_code == 200
        reused = anon.post("/auth/reset-password", json={"token": reset_token, "new_password": "third-password-3"})
        assert reused.status_code == 400 and reused.json()["error"]["code"] == "invalid_token"
        # Sessions from before the reset cannot be refreshed.
        assert anon.post("/auth/refresh", json={"refresh_token": old_refresh}).status_code == 401


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


def test_configured_admin_emails_sign_up_as_admins(server):
    with server.client(server.signup_and_login("Root@Example.com")) as api:
        assert api.get("/auth/me").json()["role"] == "admin"
    with server.client(server.signup_and_login("someone-else@example.com")) as api:
        assert api.get("/auth/me").json()["role"] == "free"
