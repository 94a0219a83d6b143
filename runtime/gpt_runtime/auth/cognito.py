"""Amazon Cognito user pools: the account routes proxied to Cognito, bearer tokens verified by JWKS.

Needs an app client without a secret that allows USER_PASSWORD_AUTH and REFRESH_TOKEN_AUTH, in a pool
whose users sign in with their email. Cognito sends the confirmation and reset codes itself, so the
`token` of POST /auth/verify-email and /auth/reset-password is `<email>:<code>`.

Settings (GPT_*): auth_provider=cognito, cognito_user_pool_id, cognito_client_id, aws_region (else the
pool id's prefix), aws_endpoint_url (emulators), oidc_jwks_url (default: the pool's public JWKS).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gpt_runtime.auth.local import TokenPair, normalize_email
from gpt_runtime.auth.oidc import EXTERNAL_PASSWORD, OIDCVerifier, SubjectLinker, is_true
from gpt_runtime.domain_errors import Conflict, DomainError, Forbidden, InvalidInput, Unauthenticated, Unavailable
from gpt_runtime.mail.log_sender import LogEmailSender
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.storage import AlreadyExists, Store, User

log = logging.getLogger("gpt_runtime.auth")


def cognito_issuer(region: str, user_pool_id: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message") or _code(exc)


def _split_token(token: str) -> tuple[str, str]:
    email, sep, code = token.rpartition(":")
    if not sep or not email or not code:
        raise InvalidInput(
            "token must be '<email>:<code>' with the code Cognito sent", param="token", code="invalid_token"
        )
    return normalize_email(email), code.strip()


def _common(exc: ClientError) -> DomainError:
    """Errors any Cognito call may give, as domain errors; the rest stay server errors."""
    code = _code(exc)
    if code in ("TooManyRequestsException", "LimitExceededException", "TooManyFailedAttemptsException"):
        return Unavailable(
            "the identity provider is throttling requests; retry shortly",
            code="idp_throttled",
            retry_after=5,
        )
    if code == "InvalidPasswordException":
        return InvalidInput(_message(exc), param="password", code="weak_password")
    if code in ("CodeMismatchException", "ExpiredCodeException"):
        return InvalidInput("the code is wrong or has expired", param="token", code="invalid_token")
    if code == "InvalidParameterException":
        return InvalidInput(_message(exc), code="invalid_parameter")
    raise exc


class CognitoAuth:
    """AuthProvider on a Cognito user pool; local User records mirror its users for our own data."""

    def __init__(
        self,
        store: Store,
        *,
        user_pool_id: str,
        client_id: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        jwks_url: str = "",
        groups_claim: str = "cognito:groups",
        jwks_cache_s: float = 3600,
        leeway_s: int = 30,
        outbox: Outbox | None = None,
    ):
        if not user_pool_id or not client_id:
            raise ValueError("cognito needs GPT_COGNITO_USER_POOL_ID and GPT_COGNITO_CLIENT_ID")
        self.store = store
        self.outbox = outbox or Outbox(LogEmailSender())
        self.user_pool_id = user_pool_id
        self.client_id = client_id
        self.region = region or user_pool_id.split("_", 1)[0]
        self.issuer = cognito_issuer(self.region, user_pool_id)
        self.verifier = OIDCVerifier(
            issuer=self.issuer,
            audience=client_id,
            jwks_url=jwks_url,
            require_token_use=True,
            cache_s=jwks_cache_s,
            leeway_s=leeway_s,
        )
        self.linker = SubjectLinker(store, self.issuer, groups_claim=groups_claim)
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        self.client: Any = boto3.session.Session().client(
            "cognito-idp", region_name=self.region, endpoint_url=endpoint_url or None, config=config
        )

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(getattr(self.client, operation), **kwargs)
        except BotoCoreError as exc:
            raise Unavailable("the identity provider is unreachable", code="idp_unavailable") from exc

    async def _local_user(self, email: str) -> User:
        user = await self.store.get_user_by_email(email)
        if user is not None:
            return user
        try:
            return await self.store.create_user(email, EXTERNAL_PASSWORD, "free")
        except AlreadyExists:
            user = await self.store.get_user_by_email(email)
            if user is None:
                raise
            return user

    async def signup(self, email: str, password: str) -> User:
        """Register with Cognito (it emails the confirmation code itself)."""
        email = normalize_email(email)
        try:
            await self._call(
                "sign_up",
                ClientId=self.client_id,
                Username=email,
                Password=password,
                UserAttributes=[{"Name": "email", "Value": email}],
            )
        except ClientError as exc:
            if _code(exc) == "UsernameExistsException":
                raise Conflict("an account with this email already exists", param="email", code="email_taken") from exc
            raise _common(exc) from exc
        return await self._local_user(email)

    def _pair(self, result: dict[str, Any], refresh_token: str | None = None) -> TokenPair:
        return TokenPair(
            result["AccessToken"], result.get("RefreshToken") or refresh_token or "", int(result.get("ExpiresIn", 3600))
        )

    async def login(self, email: str, password: str) -> TokenPair:
        try:
            response = await self._call(
                "initiate_auth",
                ClientId=self.client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": email.strip().lower(), "PASSWORD": password},
            )
        except ClientError as exc:
            if _code(exc) in ("NotAuthorizedException", "UserNotFoundException"):
                raise Unauthenticated("incorrect email or password", code="invalid_credentials") from exc
            if _code(exc) == "UserNotConfirmedException":
                raise Forbidden("verify your email address before logging in", code="email_not_verified") from exc
            raise _common(exc) from exc
        if "AuthenticationResult" not in response:
            challenge = response.get("ChallengeName", "unknown")
            raise Forbidden(f"the identity provider asks for a {challenge} challenge", code="challenge_required")
        return self._pair(response["AuthenticationResult"])

    async def refresh(self, refresh_token: str) -> TokenPair:
        try:
            response = await self._call(
                "initiate_auth",
                ClientId=self.client_id,
                AuthFlow="REFRESH_TOKEN_AUTH",
                AuthParameters={"REFRESH_TOKEN": refresh_token},
            )
        except ClientError as exc:
            if _code(exc) in ("NotAuthorizedException", "ResourceNotFoundException", "UserNotFoundException"):
                raise Unauthenticated("refresh token is no longer valid", code="invalid_token") from exc
            raise _common(exc) from exc
        return self._pair(response["AuthenticationResult"], refresh_token)

    async def verify_email(self, token: str) -> User:
        email, code = _split_token(token)
        try:
            await self._call("confirm_sign_up", ClientId=self.client_id, Username=email, ConfirmationCode=code)
        except ClientError as exc:
            if _code(exc) in ("UserNotFoundException", "NotAuthorizedException"):
                raise InvalidInput("token is no longer valid", param="token", code="invalid_token") from exc
            raise _common(exc) from exc
        user = await self._local_user(email)
        return await self.store.update_user(user.id, email_verified=True) or user

    async def forgot_password(self, email: str) -> None:
        """Cognito mails the reset code. The call is made after the answer (on the Outbox), so known and unknown
        addresses, and a slow or throttling pool, all answer the same 202 in the same time."""
        email = normalize_email(email)

        async def request_code() -> None:
            try:
                await self._call("forgot_password", ClientId=self.client_id, Username=email)
            except ClientError as exc:
                if _code(exc) not in ("UserNotFoundException", "InvalidParameterException", "NotAuthorizedException"):
                    log.warning("Cognito refused a password reset request", extra={"error": _code(exc)})

        self.outbox.submit(request_code)

    async def reset_password(self, token: str, new_password: str) -> None:
        email, code = _split_token(token)
        try:
            await self._call(
                "confirm_forgot_password",
                ClientId=self.client_id,
                Username=email,
                ConfirmationCode=code,
                Password=new_password,
            )
        except ClientError as exc:
            if _code(exc) in ("UserNotFoundException", "NotAuthorizedException"):
                raise InvalidInput("token is no longer valid", param="token", code="invalid_token") from exc
            raise _common(exc) from exc

    async def _email_of(self, access_token: str, claims: dict[str, Any]) -> str | None:
        """Cognito access tokens carry no email: ask the pool (once per subject; the linker remembers).

        Only a verified address counts: a user may set their email attribute to anything, and Cognito
        marks it unverified until they confirm the code it mails."""
        try:
            response = await self._call("get_user", AccessToken=access_token)
        except ClientError as exc:
            if _code(exc) in ("NotAuthorizedException", "UserNotFoundException"):
                raise Unauthenticated("token was revoked or its user no longer exists", code="invalid_token") from exc
            raise _common(exc) from exc
        attributes = {a["Name"]: a["Value"] for a in response.get("UserAttributes", [])}
        return attributes.get("email") if is_true(attributes.get("email_verified")) else None

    async def authenticate(self, access_token: str) -> User:
        claims = await self.verifier.verify(access_token)
        return await self.linker.user(claims, access_token, self._email_of)

    def forget_user(self, user_id: str) -> None:
        self.linker.forget_user(user_id)
