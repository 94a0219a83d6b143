"""A Cognito user pool on moto's server and a real runtime (uvicorn subprocess) that trusts it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest

from ..aws_emulator import moto_endpoint
from ..conftest import RuntimeServer, start_runtime, stop_runtime

PASSWORD = "Correct-Horse-9-battery"


@dataclass
class Pool:
    endpoint: str
    pool_id: str
    client_id: str
    idp: Any  # boto3 cognito-idp client, for what an operator does in the AWS console

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.us-east-1.amazonaws.com/{self.pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json"

    def mark_verified(self, email: str, verified: bool = True) -> None:
        """What Cognito does when a code for the email attribute is confirmed (moto's pool does not)."""
        self.idp.admin_update_user_attributes(
            UserPoolId=self.pool_id,
            Username=email,
            UserAttributes=[{"Name": "email_verified", "Value": "true" if verified else "false"}],
        )


@dataclass
class CognitoRuntime:
    server: RuntimeServer
    pool: Pool

    def client(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token)

    def register(self, email: str | None = None, password: str = PASSWORD) -> tuple[str, dict]:
        """Sign up through the runtime, confirm with the emailed code, log in: (email, token pair)."""
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        with self.client() as client:
            assert client.post("/auth/signup", json={"email": email, "password": password}).status_code == 201
            assert client.post("/auth/verify-email", json={"token": f"{email}:123456"}).status_code == 200
            self.pool.mark_verified(email)
            response = client.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return email, response.json()


def make_pool(endpoint: str) -> Pool:
    idp = boto3.client("cognito-idp", region_name="us-east-1", endpoint_url=endpoint)
    pool_id = idp.create_user_pool(
        PoolName=f"gpt-{uuid.uuid4().hex[:8]}", UsernameAttributes=["email"], AutoVerifiedAttributes=["email"]
    )["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="runtime",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    for group in ("admin", "premium"):
        idp.create_group(UserPoolId=pool_id, GroupName=group)
    return Pool(endpoint, pool_id, client_id, idp)


@pytest.fixture(scope="module")
def cognito(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CognitoRuntime]:
    pool = make_pool(moto_endpoint())
    server = start_runtime(
        tmp_path_factory.mktemp("cognito"),
        GPT_AUTH_PROVIDER="cognito",
        GPT_COGNITO_USER_POOL_ID=pool.pool_id,
        GPT_COGNITO_CLIENT_ID=pool.client_id,
        GPT_AWS_REGION="us-east-1",
        GPT_AWS_ENDPOINT_URL=pool.endpoint,
        GPT_OIDC_JWKS_URL=pool.jwks_url,
        GPT_RATE_LIMIT_ANONYMOUS="0",
    )
    yield CognitoRuntime(server, pool)
    stop_runtime(server)


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CognitoRuntime]:
    """The same kind of pool, trusted as a plain OIDC issuer: no account routes, tokens only."""
    pool = make_pool(moto_endpoint())
    server = start_runtime(
        tmp_path_factory.mktemp("oidc"),
        GPT_AUTH_PROVIDER="oidc",
        GPT_OIDC_ISSUER=pool.issuer,
        GPT_OIDC_AUDIENCE=pool.client_id,
        GPT_OIDC_JWKS_URL=pool.jwks_url,
        GPT_RATE_LIMIT_ANONYMOUS="0",
    )
    yield CognitoRuntime(server, pool)
    stop_runtime(server)
