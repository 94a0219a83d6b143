"""Local accounts: signup, login, token refresh, email verification and password reset."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from gpt_runtime.auth.account_mail import AccountMail
from gpt_runtime.auth.api_keys import ApiKeys
from gpt_runtime.auth.passwords import hash_password, hash_password_off_loop, verify_password_off_loop
from gpt_runtime.auth.tokens import TokenError, TokenSigner, password_version
from gpt_runtime.domain_errors import Conflict, Forbidden, InvalidInput, Unauthenticated
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import AlreadyExists, Store, User
from gpt_runtime.storage.base import Role

USER_CACHE_TTL_S = 10.0
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
# Verifying against a real hash for unknown emails keeps login timing the same either way.
_DUMMY_HASH = hash_password("not-a-real-password")


def normalize_email(email: str) -> str:
    """Lower-cased, trimmed email; raises InvalidInput when it is not an address."""
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput("email is not a valid address", param="email", code="invalid_email")
    return email


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class LocalAuth:
    """Account flows on our own Store with argon2 hashes and HS256 tokens.

    Tokens for email verification and password reset only ever travel by mail (AccountMail); the
    answers to signup and forgot-password carry none.
    """

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        mail: AccountMail,
        settings: RuntimeSettings,
        api_keys: ApiKeys | None = None,
    ):
        self.store = store
        self.signer = signer
        self.mail = mail
        self.settings = settings
        self.api_keys = api_keys
        self._users: dict[str, tuple[float, User]] = {}

    def _check_password(self, password: str) -> None:
        if len(password) < self.settings.password_min_length:
            raise InvalidInput(
                f"password must be at least {self.settings.password_min_length} characters",
                param="password",
                code="weak_password",
            )

    def _pair(self, user: User) -> TokenPair:
        ttl = self.settings.access_token_ttl_s
        access = self.signer.issue(user.id, "access", ttl, role=user.role, password_hash=user.password_hash)
        refresh = self.signer.issue(
            user.id, "refresh", self.settings.refresh_token_ttl_s, password_hash=user.password_hash
        )
        return TokenPair(access, refresh, ttl)

    def _verified_role(self, user: User) -> Role | None:
        """The role an address in GPT_ADMIN_EMAILS earns once it is proven (None: no change)."""
        return "admin" if user.email in self.settings.admin_emails and user.role != "admin" else None

    async def signup(self, email: str, password: str) -> User:
        """Create a free account and mail it a verification link (admin addresses become admins there)."""
        email = normalize_email(email)
        self._check_password(password)
        try:
            user = await self.store.create_user(email, await hash_password_off_loop(password), "free")
        except AlreadyExists as exc:
            raise Conflict("an account with this email already exists", param="email", code="email_taken") from exc
        token = self.signer.issue(user.id, "verify_email", self.settings.email_token_ttl_s)
        self.mail.verification(email, token)
        return user

    async def login(self, email: str, password: str) -> TokenPair:
        user = await self.store.get_user_by_email(email.strip().lower())
        if user is None:
            await verify_password_off_loop(_DUMMY_HASH, password)
            raise Unauthenticated("incorrect email or password", code="invalid_credentials")
        if not await verify_password_off_loop(user.password_hash, password):
            raise Unauthenticated("incorrect email or password", code="invalid_credentials")
        if self.settings.require_verified_email and not user.email_verified:
            raise Forbidden("verify your email address before logging in", code="email_not_verified")
        return self._pair(user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        claims = self._verify(refresh_token, "refresh")
        user = await self.store.get_user(claims.subject)
        if user is None or claims.password_version != password_version(user.password_hash):
            raise Unauthenticated("refresh token is no longer valid", code="invalid_token")
        return self._pair(user)

    async def verify_email(self, token: str) -> User:
        claims = self._verify(token, "verify_email", status=InvalidInput)
        user = await self.store.get_user(claims.subject)
        if user is None:
            raise InvalidInput("token is no longer valid", param="token", code="invalid_token")
        if not user.email_verified or self._verified_role(user):
            user = await self.store.update_user(user.id, email_verified=True, role=self._verified_role(user)) or user
        self.forget_user(user.id)
        return user

    async def forgot_password(self, email: str) -> None:
        """Mail a reset link if the account exists. The lookup happens off the request path
        (AccountMail), so the answer is the same, in the same time, for every address."""
        email = normalize_email(email)

        async def reset_token() -> str | None:
            user = await self.store.get_user_by_email(email)
            if user is None:
                return None
            return self.signer.issue(
                user.id, "reset_password", self.settings.email_token_ttl_s, password_hash=user.password_hash
            )

        self.mail.password_reset(email, reset_token)

    async def reset_password(self, token: str, new_password: str) -> None:
        """Set a new password: every refresh token and API key of the account dies with the old one, and
        the mailed token proves the address, so it counts as verified."""
        claims = self._verify(token, "reset_password", status=InvalidInput)
        self._check_password(new_password)
        user = await self.store.get_user(claims.subject)
        if user is None or claims.password_version != password_version(user.password_hash):
            raise InvalidInput(
                "reset token was already used or is no longer valid", param="token", code="invalid_token"
            )
        await self.store.update_user(
            user.id,
            password_hash=await hash_password_off_loop(new_password),
            email_verified=True,
            role=self._verified_role(user),
        )
        if self.api_keys is not None:
            await self.api_keys.revoke_all(user.id)
        self.forget_user(user.id)

    async def authenticate(self, access_token: str) -> User:
        """The user an access token belongs to; 401 for anything else.

        Users are kept for a few seconds in process (every request authenticates); a role change
        made through this pod shows at once, through another pod within USER_CACHE_TTL_S.
        """
        claims = self._verify(access_token, "access")
        now = time.monotonic()
        entry = self._users.get(claims.subject)
        user: User | None
        if entry is not None and entry[0] > now:
            user = entry[1]
        else:
            user = await self.store.get_user(claims.subject)
            if user is None:
                raise Unauthenticated("account no longer exists", code="invalid_token")
            if len(self._users) > 10_000:
                self._users.clear()
            self._users[user.id] = (now + USER_CACHE_TTL_S, user)
        if claims.password_version != password_version(user.password_hash):
            raise Unauthenticated("the password changed since this token was issued", code="invalid_token")
        return user

    def forget_user(self, user_id: str) -> None:
        """Drop a cached user after its record changed."""
        self._users.pop(user_id, None)

    def _verify(self, token: str, purpose, status=Unauthenticated):
        try:
            return self.signer.verify(token, purpose)
        except TokenError as exc:
            code = "token_expired" if "expired" in str(exc) else "invalid_token"
            kwargs = {"param": "token"} if status is InvalidInput else {}
            raise status(str(exc), code=code, **kwargs) from exc
