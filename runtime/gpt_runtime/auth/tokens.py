"""Signed JWTs for access, refresh, email verification and password reset."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt

Purpose = Literal["access", "refresh", "verify_email", "reset_password"]
ALGORITHM = "HS256"
VERIFIED_CACHE_SIZE = 50_000


class TokenError(Exception):
    """A token that is malformed, forged, expired or meant for something else."""


def password_version(password_hash: str) -> str:
    """A short fingerprint of the password hash: tokens carrying it die when the password changes."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claims:
    subject: str
    purpose: Purpose
    role: str | None
    password_version: str | None
    expires_at: int


class TokenSigner:
    """Issues and verifies our own HS256 tokens."""

    def __init__(self, secret: str, issuer: str):
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.issuer = issuer
        self._verified: dict[str, Claims] = {}

    def issue(
        self,
        subject: str,
        purpose: Purpose,
        ttl_s: int,
        *,
        role: str | None = None,
        password_hash: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": subject,
            "typ": purpose,
            "iss": self.issuer,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if role is not None:
            claims["role"] = role
        if password_hash is not None:
            claims["pwv"] = password_version(password_hash)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, purpose: Purpose) -> Claims:
        """Check signature, issuer, expiry and purpose. Access tokens, checked on every request,
        are remembered once verified (a token never changes; its expiry is still checked each time)."""
        remembered = self._verified.get(token) if purpose == "access" else None
        if remembered is not None:
            if remembered.expires_at > time.time():
                return remembered
            del self._verified[token]
            raise TokenError("token has expired")
        claims = self._decode(token, purpose)
        if purpose == "access":
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def _decode(self, token: str, purpose: Purpose) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["sub", "typ", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("token is invalid") from exc
        if claims.get("typ") != purpose:
            raise TokenError("token is not valid for this use")
        return Claims(claims["sub"], purpose, claims.get("role"), claims.get("pwv"), claims["exp"])


def load_or_create_secret(path: Path) -> str:
    """A development secret kept in the data directory (mode 0600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret
