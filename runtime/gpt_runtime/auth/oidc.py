"""Bearer tokens from an OpenID Connect issuer (Amazon Cognito or any other), verified with its JWKS.

A token is accepted when it is RS256-signed by a key in the issuer's JWKS and its claims say:
`iss` == the configured issuer, `aud` contains or `client_id` equals the configured audience (Cognito
access tokens carry `client_id`, ID tokens and most other issuers `aud`), `exp`/`iat` within the leeway,
and `token_use` == "access" (required for Cognito; other issuers may omit it, but an ID token is refused).

Keys are cached for `oidc_jwks_cache_s`; a token naming an unknown `kid` refetches the set (at most every
10 s), so key rotation needs no restart. The JWKS address is a setting of its own because an emulator may
serve it somewhere other than `<issuer>/.well-known/jwks.json`.

Each subject gets a local User record (conversations and jobs hang off its id): linked by the verified
email when the token (or, for Cognito, the user's attributes) gives one, else keyed `<sub>@<issuer host>`.
Its role follows the groups claim on every request: admin > premium > free.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from gpt_runtime.auth.local import USER_CACHE_TTL_S, TokenPair
from gpt_runtime.domain_errors import InvalidInput, Unauthenticated, Unavailable
from gpt_runtime.storage import AlreadyExists, Store, User
from gpt_runtime.storage.base import Role

ALGORITHMS = ["RS256"]
EXTERNAL_PASSWORD = "!external"  # never a valid argon2 hash: such accounts cannot log in locally
_MIN_REFETCH_S = 10.0


def role_from_groups(groups: object) -> Role:
    """admin > premium > free, from a list of group names (anything else counts as no groups)."""
    names = set(groups) if isinstance(groups, list | tuple) else set()
    if "admin" in names:
        return "admin"
    if "premium" in names:
        return "premium"
    return "free"


class JWKSCache:
    """The issuer's signing keys by `kid`, fetched over HTTP and kept for `ttl_s`."""

    def __init__(self, url: str, ttl_s: float, *, timeout_s: float = 5.0):
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.get(self.url)
            response.raise_for_status()
            document = response.json()
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig" and "kid" in jwk:
                keys[jwk["kid"]] = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> Any | None:
        """The public key for `kid`, refetching when the cache is stale or the kid is new."""
        age = time.monotonic() - self._fetched_at
        if kid in self._keys and age < self.ttl_s:
            return self._keys[kid]
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = age >= self.ttl_s
            if stale or (kid not in self._keys and age >= _MIN_REFETCH_S):
                try:
                    await self._fetch()
                except (httpx.HTTPError, ValueError) as exc:
                    if not self._keys:
                        raise Unavailable(
                            "the identity provider's signing keys are unreachable", code="jwks_unavailable"
                        ) from exc
                    # keep serving with the keys we have; try again in a few seconds
                    self._fetched_at = time.monotonic() - self.ttl_s + _MIN_REFETCH_S
        return self._keys.get(kid)


class OIDCVerifier:
    """Checks a bearer token against one issuer and audience; returns its claims."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        require_token_use: bool,
        cache_s: float = 3600,
        leeway_s: int = 30,
    ):
        if not issuer or not audience:
            raise ValueError("an OIDC issuer and audience (client id) are required")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.require_token_use = require_token_use
        self.leeway_s = leeway_s
        self.jwks = JWKSCache(jwks_url or f"{self.issuer}/.well-known/jwks.json", cache_s)

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token is invalid", code="invalid_token") from exc
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise Unauthenticated("token is invalid", code="invalid_token")
        key = await self.jwks.key(header["kid"])
        if key is None:
            raise Unauthenticated("token is signed by an unknown key", code="invalid_token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["sub", "iss", "exp", "iat"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token has expired", code="token_expired") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("token is from another issuer", code="invalid_token") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token is invalid", code="invalid_token") from exc
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if self.audience not in audiences and claims.get("client_id") != self.audience:
            raise Unauthenticated("token is for another client", code="invalid_token")
        token_use = claims.get("token_use")
        if token_use != "access" and (self.require_token_use or token_use is not None):
            raise Unauthenticated("an access token is required", code="invalid_token")
        return claims


def is_true(value: object) -> bool:
    """A boolean claim: JSON true, or the string "true" that Cognito puts in ID tokens and user attributes."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


EmailLookup = Callable[[str, dict[str, Any]], Awaitable[str | None]]


class SubjectLinker:
    """The local User for a token's subject: found or created once, then remembered for a few seconds."""

    def __init__(
        self, store: Store, issuer: str, *, groups_claim: str, ttl_s: float = USER_CACHE_TTL_S, max_cached: int = 10_000
    ):
        self.store = store
        self.issuer_host = urlsplit(issuer).netloc or "issuer"
        self.groups_claim = groups_claim
        self.ttl_s = ttl_s
        self.max_cached = max_cached
        self._ids: OrderedDict[str, str] = OrderedDict()  # subject -> local user id (linking is costly)
        self._users: dict[str, tuple[float, User]] = {}  # subject -> (expires, user): skips a read per request

    async def user(self, claims: dict[str, Any], token: str, email_lookup: EmailLookup | None = None) -> User:
        role = role_from_groups(claims.get(self.groups_claim))
        subject = str(claims["sub"])
        now = time.monotonic()
        cached = self._users.get(subject)
        if cached is not None and cached[0] > now and cached[1].role == role:
            return cached[1]
        user_id = self._ids.get(subject)
        user = await self.store.get_user(user_id) if user_id else None
        if user is None:
            user = await self._link(subject, claims, token, email_lookup, role)
            self._ids[subject] = user.id
            while len(self._ids) > self.max_cached:
                self._ids.popitem(last=False)
        else:
            self._ids.move_to_end(subject)
        if user.role != role:  # the issuer's groups decide the tier
            user = await self.store.update_user(user.id, role=role) or user
        if len(self._users) > self.max_cached:
            self._users.clear()
        self._users[subject] = (now + self.ttl_s, user)
        return user

    def forget_user(self, user_id: str) -> None:
        """Drop what is remembered about a local user whose record changed."""
        for subject in [s for s, (_, user) in self._users.items() if user.id == user_id]:
            del self._users[subject]

    async def _link(
        self, subject: str, claims: dict[str, Any], token: str, email_lookup: EmailLookup | None, role: Role
    ) -> User:
        # Link to an existing account by email only when the issuer vouches for the address: anyone
        # can put any email on their profile at most issuers. Otherwise the subject gets its own account.
        email = None
        if claims.get("email") and is_true(claims.get("email_verified")):
            email = str(claims["email"])
        elif email_lookup is not None:
            email = await email_lookup(token, claims)
        if email is not None and email.strip().lower().endswith(f"@{self.issuer_host}"):
            email = None  # the form of the keys below: an address there must not stand in for another subject
        verified = email is not None
        key = (email or f"{subject}@{self.issuer_host}").strip().lower()
        user = await self.store.get_user_by_email(key)
        if user is None:
            try:
                user = await self.store.create_user(key, EXTERNAL_PASSWORD, role)
            except AlreadyExists:
                user = await self.store.get_user_by_email(key)
                if user is None:
                    raise
        if verified and not user.email_verified:
            user = await self.store.update_user(user.id, email_verified=True) or user
        return user


def _managed_elsewhere(issuer: str) -> InvalidInput:
    return InvalidInput(
        f"accounts are managed by the identity provider {issuer}; sign in there",
        code="external_identity_provider",
    )


class OIDCAuth:
    """AuthProvider for any OIDC issuer: bearer tokens only, account flows happen at the issuer."""

    def __init__(self, store: Store, verifier: OIDCVerifier, *, groups_claim: str = "cognito:groups"):
        self.store = store
        self.verifier = verifier
        self.linker = SubjectLinker(store, verifier.issuer, groups_claim=groups_claim)

    async def authenticate(self, access_token: str) -> User:
        claims = await self.verifier.verify(access_token)
        return await self.linker.user(claims, access_token)

    def forget_user(self, user_id: str) -> None:
        self.linker.forget_user(user_id)

    async def signup(self, email: str, password: str) -> User:
        raise _managed_elsewhere(self.verifier.issuer)

    async def login(self, email: str, password: str) -> TokenPair:
        raise _managed_elsewhere(self.verifier.issuer)

    async def refresh(self, refresh_token: str) -> TokenPair:
        raise _managed_elsewhere(self.verifier.issuer)

    async def verify_email(self, token: str) -> User:
        raise _managed_elsewhere(self.verifier.issuer)

    async def forgot_password(self, email: str) -> None:
        raise _managed_elsewhere(self.verifier.issuer)

    async def reset_password(self, token: str, new_password: str) -> None:
        raise _managed_elsewhere(self.verifier.issuer)
