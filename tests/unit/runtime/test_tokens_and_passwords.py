from __future__ import annotations

import time

import jwt
import pytest
from gpt_runtime.auth.passwords import hash_password, verify_password
from gpt_runtime.auth.tokens import TokenError, TokenSigner, load_or_create_secret, password_version

pytestmark = pytest.mark.unit
SECRET = "s" * 40


def test_token_round_trip_keeps_subject_role_and_purpose():
    signer = TokenSigner(SECRET, "issuer")
    claims = signer.verify(signer.issue("u1", "access", 60, role="premium"), "access")
    assert (claims.subject, claims.role, claims.purpose) == ("u1", "premium", "access")


def test_token_for_one_purpose_is_refused_for_another():
    signer = TokenSigner(SECRET, "issuer")
    with pytest.raises(TokenError, match="not valid for this use"):
        signer.verify(signer.issue("u1", "refresh", 60), "access")


def test_expired_forged_and_foreign_issuer_tokens_fail():
    signer = TokenSigner(SECRET, "issuer")
    with pytest.raises(TokenError, match="expired"):
        signer.verify(signer.issue("u1", "access", -1), "access")
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(TokenSigner("x" * 40, "issuer").issue("u1", "access", 60), "access")
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(TokenSigner(SECRET, "elsewhere").issue("u1", "access", 60), "access")
    now = int(time.time())
    no_type = jwt.encode({"sub": "u1", "iss": "issuer", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        signer.verify(no_type, "access")


def test_short_secrets_are_refused():
    with pytest.raises(ValueError, match="32"):
        TokenSigner("short", "issuer")


def test_password_version_changes_with_the_hash():
    signer = TokenSigner(SECRET, "issuer")
    first, second = hash_password("one-password"), hash_password("one-password")
    claims = signer.verify(signer.issue("u1", "reset_password", 60, password_hash=first), "reset_password")
    assert claims.password_version == password_version(first) != password_version(second)


def test_argon2_hashes_verify_and_never_raise():
    stored = hash_password("pa55word!")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "pa55word!")
    assert not verify_password(stored, "wrong")
    assert not verify_password("not-a-hash", "pa55word!")


def test_dev_secret_is_created_once_with_private_mode(tmp_path):
    path = tmp_path / "sub" / ".jwt_secret"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


class _SlowHasher:
    """argon2's cost, made visible: each hash or verify holds its thread for 0.3 s."""

    def hash(self, password: str) -> str:
        time.sleep(0.3)
        return "$slow$" + password

    def verify(self, password_hash: str, password: str) -> bool:
        time.sleep(0.3)
        return password_hash == "$slow$" + password


class _NoUsers:
    async def get_user_by_email(self, email: str) -> None:
        return None

    async def create_user(self, email: str, password_hash: str, role: str) -> None:
        raise AssertionError("not reached: the test stops at the hash")


def test_logins_and_signups_hash_off_the_event_loop(monkeypatch: pytest.MonkeyPatch):
    """While a password is hashed or verified, the event loop goes on serving other requests (it stalled every
    request of the pod for the hash's duration: ~1 s per login under load)."""
    import asyncio
    import contextlib

    from gpt_runtime.auth import passwords
    from gpt_runtime.auth.local import LocalAuth
    from gpt_runtime.domain_errors import Unauthenticated
    from gpt_runtime.settings import RuntimeSettings

    monkeypatch.setattr(passwords, "_hasher", _SlowHasher())
    auth = LocalAuth(_NoUsers(), TokenSigner(SECRET, "issuer"), None, RuntimeSettings())  # type: ignore[arg-type]

    async def ticks_during(flow) -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        with contextlib.suppress(Unauthenticated, AssertionError):
            await flow()
        done.set()
        await task
        return ticks

    async def main() -> tuple[int, int]:
        login = await ticks_during(lambda: auth.login("nobody@example.com", "correct horse battery"))
        signup = await ticks_during(lambda: auth.signup("new@example.com", "correct horse battery"))
        return login, signup

    login_ticks, signup_ticks = asyncio.run(main())
    assert login_ticks >= 10 and signup_ticks >= 10, (login_ticks, signup_ticks)
