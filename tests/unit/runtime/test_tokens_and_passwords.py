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
