"""Authentication providers behind one interface; the settings pick which one serves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from gpt_runtime.auth.account_mail import AccountMail
from gpt_runtime.auth.api_keys import ApiKeys, is_api_key
from gpt_runtime.auth.local import LocalAuth, TokenPair
from gpt_runtime.auth.tokens import TokenSigner, load_or_create_secret
from gpt_runtime.backends import WindowCounter
from gpt_runtime.domain_errors import Unauthenticated
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Store, User

log = logging.getLogger("gpt_runtime.auth")


class AuthProvider(Protocol):
    """What the routers need from an identity provider (local accounts, Cognito, any OIDC issuer)."""

    async def signup(self, email: str, password: str) -> User: ...
    async def login(self, email: str, password: str) -> TokenPair: ...
    async def refresh(self, refresh_token: str) -> TokenPair: ...
    async def verify_email(self, token: str) -> User: ...
    async def forgot_password(self, email: str) -> None: ...
    async def reset_password(self, token: str, new_password: str) -> None: ...
    async def authenticate(self, access_token: str) -> User: ...
    def forget_user(self, user_id: str) -> None: ...


EventHook = Callable[[str], None]  # told an auth event's name (metrics.AUTH_EVENTS), never who it concerns


def _ignore(event: str) -> None:
    return None


class WithApiKeys:
    """An AuthProvider that also takes the account's API keys (`sk-gpt-…`) as bearer tokens.

    Every provider is reached through it, so it reports the auth events (`on_event`): signup, login,
    login_failed, token_rejected, api_key_rejected, password_reset.
    """

    def __init__(self, provider: AuthProvider, keys: ApiKeys, on_event: EventHook = _ignore):
        self.provider = provider
        self.keys = keys
        self.on_event = on_event

    async def authenticate(self, access_token: str) -> User:
        api_key = is_api_key(access_token)
        try:
            if api_key:
                return await self.keys.authenticate(access_token)
            return await self.provider.authenticate(access_token)
        except Unauthenticated:
            self.on_event("api_key_rejected" if api_key else "token_rejected")
            raise

    def forget_user(self, user_id: str) -> None:
        self.provider.forget_user(user_id)
        self.keys.forget_user(user_id)

    async def signup(self, email: str, password: str) -> User:
        user = await self.provider.signup(email, password)
        self.on_event("signup")
        return user

    async def login(self, email: str, password: str) -> TokenPair:
        try:
            pair = await self.provider.login(email, password)
        except Unauthenticated:
            self.on_event("login_failed")
            raise
        self.on_event("login")
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        return await self.provider.refresh(refresh_token)

    async def verify_email(self, token: str) -> User:
        return await self.provider.verify_email(token)

    async def forgot_password(self, email: str) -> None:
        await self.provider.forgot_password(email)

    async def reset_password(self, token: str, new_password: str) -> None:
        await self.provider.reset_password(token, new_password)
        self.on_event("password_reset")


def jwt_secret(settings: RuntimeSettings) -> str:
    """The signing secret: GPT_JWT_SECRET, else a random one kept in the data directory.

    A kept secret is for one replica: every replica must share GPT_JWT_SECRET (the operator's Secret
    <name>-jwt), or a token from one is refused by the others.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / ".jwt_secret"
    log.warning("GPT_JWT_SECRET is not set: signing with a secret kept in the data directory (one replica only)")
    return load_or_create_secret(path)


def build_auth(
    settings: RuntimeSettings,
    store: Store,
    outbox: Outbox,
    keys: ApiKeys,
    counter: WindowCounter | None = None,
    *,
    on_event: EventHook = _ignore,
) -> WithApiKeys:
    """The provider the settings ask for (local accounts by default, Cognito, or any OIDC issuer), with API keys."""
    provider: AuthProvider
    if settings.auth_provider == "cognito":
        from gpt_runtime.auth.cognito import CognitoAuth

        provider = CognitoAuth(
            store,
            user_pool_id=settings.cognito_user_pool_id,
            client_id=settings.cognito_client_id,
            region=settings.aws_region or None,
            endpoint_url=settings.aws_endpoint_url or None,
            jwks_url=settings.oidc_jwks_url,
            groups_claim=settings.oidc_groups_claim,
            jwks_cache_s=settings.oidc_jwks_cache_s,
            leeway_s=settings.oidc_leeway_s,
            outbox=outbox,
        )
    elif settings.auth_provider == "oidc":
        from gpt_runtime.auth.oidc import OIDCAuth, OIDCVerifier

        verifier = OIDCVerifier(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            require_token_use=False,
            cache_s=settings.oidc_jwks_cache_s,
            leeway_s=settings.oidc_leeway_s,
        )
        provider = OIDCAuth(store, verifier, groups_claim=settings.oidc_groups_claim)
    else:
        signer = TokenSigner(jwt_secret(settings), settings.jwt_issuer)
        provider = LocalAuth(store, signer, AccountMail(outbox, settings, counter), settings, keys)
    return WithApiKeys(provider, keys, on_event)
