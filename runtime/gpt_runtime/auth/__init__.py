"""Authentication providers behind one interface; the settings pick which one serves."""

from __future__ import annotations

from typing import Protocol

from gpt_runtime.auth.email import EmailSender
from gpt_runtime.auth.local import LocalAuth, TokenPair
from gpt_runtime.auth.tokens import TokenSigner, load_or_create_secret
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Store, User


class AuthProvider(Protocol):
    """What the routers need from an identity provider (local accounts, Cognito, any OIDC issuer)."""

    async def signup(self, email: str, password: str) -> tuple[User, str | None]: ...
    async def login(self, email: str, password: str) -> TokenPair: ...
    async def refresh(self, refresh_token: str) -> TokenPair: ...
    async def verify_email(self, token: str) -> User: ...
    async def forgot_password(self, email: str) -> str | None: ...
    async def reset_password(self, token: str, new_password: str) -> None: ...
    async def authenticate(self, access_token: str) -> User: ...
    def forget_user(self, user_id: str) -> None: ...


def jwt_secret(settings: RuntimeSettings) -> str:
    """The signing secret: GPT_JWT_SECRET, or in dev mode one kept in the data directory."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if not settings.dev_mode:
        raise RuntimeError("GPT_JWT_SECRET must be set when GPT_DEV_MODE is false")
    return load_or_create_secret(settings.data_dir / ".jwt_secret")


def build_auth(settings: RuntimeSettings, store: Store, email: EmailSender) -> AuthProvider:
    """The provider the settings ask for: local accounts (default), Cognito, or any OIDC issuer."""
    if settings.auth_provider == "cognito":
        from gpt_runtime.auth.cognito import CognitoAuth

        return CognitoAuth(
            store,
            user_pool_id=settings.cognito_user_pool_id,
            client_id=settings.cognito_client_id,
            region=settings.aws_region or None,
            endpoint_url=settings.aws_endpoint_url or None,
            jwks_url=settings.oidc_jwks_url,
            groups_claim=settings.oidc_groups_claim,
            jwks_cache_s=settings.oidc_jwks_cache_s,
            leeway_s=settings.oidc_leeway_s,
        )
    if settings.auth_provider == "oidc":
        from gpt_runtime.auth.oidc import OIDCAuth, OIDCVerifier

        verifier = OIDCVerifier(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            require_token_use=False,
            cache_s=settings.oidc_jwks_cache_s,
            leeway_s=settings.oidc_leeway_s,
        )
        return OIDCAuth(store, verifier, groups_claim=settings.oidc_groups_claim)
    return LocalAuth(store, TokenSigner(jwt_secret(settings), settings.jwt_issuer), email, settings)
