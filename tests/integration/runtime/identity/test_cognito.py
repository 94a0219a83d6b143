"""Cognito behind the runtime, over real HTTP: account flows proxied to moto's Cognito, JWKS-verified tokens."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.utilities.utils import load_resource

from ..conftest import free_port, start_runtime, stop_runtime
from .conftest import PASSWORD, CognitoRuntime

pytestmark = pytest.mark.integration


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_signup_confirm_login_and_use_the_token(cognito: CognitoRuntime):
    email = f"ann-{uuid.uuid4().hex[:6]}@example.com"
    with cognito.client() as client:
        signup = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
        assert signup.status_code == 201, signup.text
        assert signup.json()["user"]["email"] == email and signup.json()["user"]["role"] == "free"
        assert set(signup.json()) == {"user"}  # no token in the answer: Cognito emails the code itself
        _error(client.post("/auth/login", json={"email": email, "password": PASSWORD}), 403, "email_not_verified")
        verified = client.post("/auth/verify-email", json={"token": f"{email}:123456"})
        assert verified.status_code == 200 and verified.json()["email_verified"] is True
        cognito.pool.mark_verified(email)
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        tokens = login.json()

    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["iss"] == cognito.pool.issuer and claims["token_use"] == "access"  # Cognito's token, not ours

    with cognito.client(tokens["access_token"]) as api:
        me = api.get("/auth/me")
        assert me.status_code == 200
        assert (me.json()["email"], me.json()["role"], me.json()["id"]) == (email, "free", signup.json()["user"]["id"])
        created = api.post("/conversations", json={"title": "from cognito"})
        assert created.status_code == 201
        listed = api.get("/conversations").json()
        assert [c["id"] for c in listed["items"]] == [created.json()["id"]]

    with cognito.client() as client:
        refreshed = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        _error(client.post("/auth/refresh", json={"refresh_token": "not-a-refresh-token"}), 401, "invalid_token")
    with cognito.client(refreshed.json()["access_token"]) as api:
        assert api.get("/auth/me").json()["email"] == email


def test_account_errors_come_back_as_json(cognito: CognitoRuntime):
    email, _ = cognito.register()
    with cognito.client() as client:
        _error(client.post("/auth/signup", json={"email": email, "password": PASSWORD}), 409, "email_taken")
        weak = f"weak-{uuid.uuid4().hex[:6]}@example.com"
        assert (
            _error(client.post("/auth/signup", json={"email": weak, "password": "short"}), 400)["param"] == "password"
        )
        _error(
            client.post("/auth/login", json={"email": email, "password": "Wrong-Pass-1"}), 401, "invalid_credentials"
        )
        nobody = {"email": "nobody@example.com", "password": PASSWORD}
        _error(client.post("/auth/login", json=nobody), 401, "invalid_credentials")
        _error(client.post("/auth/verify-email", json={"token": "no-code-here"}), 400, "invalid_token")


def test_forgot_and_reset_password(cognito: CognitoRuntime):
    email, _ = cognito.register()
    new_password = "Another-Horse-7-staple"
    with cognito.client() as client:
        assert client.post("/auth/forgot-password", json={"email": email}).status_code == 202
        assert client.post("/auth/forgot-password", json={"email": "nobody@example.com"}).status_code == 202
        reset = client.post("/auth/reset-password", json={"token": f"{email}:654321", "new_password": new_password})
        assert reset.status_code == 200, reset.text
        _error(client.post("/auth/login", json={"email": email, "password": PASSWORD}), 401, "invalid_credentials")
        assert client.post("/auth/login", json={"email": email, "password": new_password}).status_code == 200


def test_an_unverified_email_attribute_does_not_link_to_the_account_with_that_email(cognito: CognitoRuntime):
    """A Cognito user sets their email attribute to someone else's address (Cognito leaves it unverified until a
    mailed code is confirmed): they must not land in the local account, and conversations, of that address."""
    victim, victim_tokens = cognito.register()
    with cognito.client(victim_tokens["access_token"]) as api:
        victim_id = api.get("/auth/me").json()["id"]
        secret = api.post("/conversations", json={"title": "victim's"}).json()["id"]
    # the victim's pool user goes away (left, or the pool was rebuilt); the local account and its data stay
    cognito.pool.idp.admin_delete_user(UserPoolId=cognito.pool.pool_id, Username=victim)
    attacker, _ = cognito.register()
    cognito.pool.idp.admin_update_user_attributes(
        UserPoolId=cognito.pool.pool_id,
        Username=attacker,
        UserAttributes=[{"Name": "email", "Value": victim}, {"Name": "email_verified", "Value": "false"}],
    )
    with cognito.client() as client:
        tokens = client.post("/auth/login", json={"email": victim, "password": PASSWORD}).json()
    with cognito.client(tokens["access_token"]) as api:
        me = api.get("/auth/me").json()
        assert me["id"] != victim_id and me["email"] != victim
        assert api.get(f"/conversations/{secret}").status_code == 404
        assert api.get("/conversations").json()["items"] == []


def test_forgot_password_answers_alike_and_at_once_whatever_the_pool_says(cognito: CognitoRuntime, tmp_path):
    """The Cognito call happens after the answer: a known or unknown address, or a pool that cannot be reached,
    all get the same 202 at once (no probing accounts by answer or by time; no 503 to learn the pool is down)."""
    email, _ = cognito.register()
    with cognito.client() as client:
        known = client.post("/auth/forgot-password", json={"email": email})
        unknown = client.post("/auth/forgot-password", json={"email": "nobody@example.com"})
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content) == (202, unknown.content)
    unreachable = start_runtime(
        tmp_path,
        GPT_AUTH_PROVIDER="cognito",
        GPT_COGNITO_USER_POOL_ID="us-east-1_Nowhere",
        GPT_COGNITO_CLIENT_ID="no-client",
        GPT_AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    )
    try:
        with unreachable.client() as client:
            started = time.monotonic()
            response = client.post("/auth/forgot-password", json={"email": email})
            assert response.status_code == 202 and response.content == known.content
            assert time.monotonic() - started < 1.0
    finally:
        stop_runtime(unreachable)


def test_cognito_groups_become_roles(cognito: CognitoRuntime):
    email, _ = cognito.register()
    idp, pool_id = cognito.pool.idp, cognito.pool.pool_id

    def role_after_login() -> str:
        with cognito.client() as client:
            token = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        with cognito.client(token) as api:
            return api.get("/auth/me").json()["role"]

    assert role_after_login() == "free"
    idp.admin_add_user_to_group(UserPoolId=pool_id, Username=email, GroupName="premium")
    assert role_after_login() == "premium"
    idp.admin_add_user_to_group(UserPoolId=pool_id, Username=email, GroupName="admin")
    assert role_after_login() == "admin"  # admin outranks premium
    idp.admin_remove_user_from_group(UserPoolId=pool_id, Username=email, GroupName="admin")
    idp.admin_remove_user_from_group(UserPoolId=pool_id, Username=email, GroupName="premium")
    assert role_after_login() == "free"


def test_users_of_one_pool_do_not_see_each_others_conversations(cognito: CognitoRuntime):
    _, ann = cognito.register()
    _, bob = cognito.register()
    with cognito.client(ann["access_token"]) as ann_api, cognito.client(bob["access_token"]) as bob_api:
        conversation = ann_api.post("/conversations", json={"title": "private"}).json()["id"]
        _error(bob_api.get(f"/conversations/{conversation}"), 404)
        assert bob_api.get("/conversations").json()["items"] == []
        assert ann_api.get(f"/conversations/{conversation}").status_code == 200


# tokens that must be refused


def _moto_key():
    """moto's pool signing key: lets a test mint tokens whose signature is valid but whose claims are wrong."""
    return jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(load_resource("cognitoidp/resources/jwks-private.json")))


def _claims(cognito: CognitoRuntime, sub: str, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": cognito.pool.issuer,
        "sub": sub,
        "client_id": cognito.pool.client_id,
        "token_use": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_well_formed_minted_token_is_accepted(cognito: CognitoRuntime):
    """The control for the refusals below: the same minting with correct claims gets in."""
    _, tokens = cognito.register()
    sub = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    with cognito.client(tokens["access_token"]) as api:
        assert api.get("/auth/me").status_code == 200  # links the subject, as the tests below do
    token = jwt.encode(_claims(cognito, sub), _moto_key(), algorithm="RS256", headers={"kid": "dummy"})
    with cognito.client(token) as api:
        assert api.get("/auth/me").status_code == 200


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "token has expired"),
        ("foreign-issuer", "token is from another issuer"),
        ("wrong-audience", "token is for another client"),
        ("id-token-use", "an access token is required"),
        ("no-token-use", "an access token is required"),
        ("unknown-kid", "token is signed by an unknown key"),
        ("other-key", "token is invalid"),
        ("hs256", "token is invalid"),
        ("garbage", "token is invalid"),
    ],
)
def test_bad_tokens_are_401_json(cognito: CognitoRuntime, case: str, message: str):
    _, tokens = cognito.register()
    sub = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    with cognito.client(tokens["access_token"]) as api:
        assert api.get("/auth/me").status_code == 200  # the subject is known: only the token can be at fault
    key, headers, algorithm = _moto_key(), {"kid": "dummy"}, "RS256"
    claims = _claims(cognito, sub)
    if case == "expired":
        claims = _claims(cognito, sub, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    elif case == "foreign-issuer":
        claims = _claims(cognito, sub, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Elsewhere")
    elif case == "wrong-audience":
        claims = _claims(cognito, sub, client_id="some-other-app-client")
    elif case == "id-token-use":
        claims = _claims(cognito, sub, token_use="id", client_id=None, aud=cognito.pool.client_id)
    elif case == "no-token-use":
        claims = _claims(cognito, sub, token_use=None)
    elif case == "unknown-kid":
        headers = {"kid": "rotated-away"}
    elif case == "other-key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif case == "hs256":
        key, algorithm = "a-shared-secret-that-is-long-enough-for-hs256", "HS256"
    token = "not.a.jwt" if case == "garbage" else jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    code = "token_expired" if case == "expired" else "invalid_token"
    with cognito.client(token) as api:
        assert _error(api.get("/auth/me"), 401, code)["message"] == message
        assert _error(api.get("/conversations"), 401, code)["message"] == message


def test_cognitos_own_id_token_is_not_an_access_token(cognito: CognitoRuntime):
    email, _ = cognito.register()
    result = cognito.pool.idp.initiate_auth(
        ClientId=cognito.pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    with cognito.client(result["IdToken"]) as api:
        _error(api.get("/auth/me"), 401, "invalid_token")
    with cognito.client(result["AccessToken"]) as api:
        assert api.get("/auth/me").json()["email"] == email
