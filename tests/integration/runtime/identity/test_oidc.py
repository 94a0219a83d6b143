"""Any OIDC issuer (here moto's Cognito pool, configured only by issuer, audience and JWKS address)."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from moto.utilities.utils import load_resource

from .conftest import PASSWORD, CognitoRuntime

pytestmark = pytest.mark.integration


def _pool_user(oidc: CognitoRuntime, *groups: str) -> tuple[str, dict]:
    """A confirmed user made directly at the issuer, and its tokens from the issuer."""
    idp, pool = oidc.pool.idp, oidc.pool
    email = f"oidc-{uuid.uuid4().hex[:8]}@example.com"
    idp.sign_up(ClientId=pool.client_id, Username=email, Password=PASSWORD)
    idp.admin_confirm_sign_up(UserPoolId=pool.pool_id, Username=email)
    for group in groups:
        idp.admin_add_user_to_group(UserPoolId=pool.pool_id, Username=email, GroupName=group)
    result = idp.initiate_auth(
        ClientId=pool.client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD}
    )["AuthenticationResult"]
    return email, result


def test_issuer_tokens_work_and_groups_map_to_roles(oidc: CognitoRuntime):
    _, plain = _pool_user(oidc)
    _, premium = _pool_user(oidc, "premium")
    with oidc.client(plain["AccessToken"]) as api:
        me = api.get("/auth/me")
        assert me.status_code == 200 and me.json()["role"] == "free"
        sub = jwt.decode(plain["AccessToken"], options={"verify_signature": False})["sub"]
        # an access token without an email claim: the account is keyed by subject at the issuer's host
        assert me.json()["email"] == f"{sub}@cognito-idp.us-east-1.amazonaws.com"
        conversation = api.post("/conversations", json={"title": "oidc"}).json()["id"]
        assert api.get(f"/conversations/{conversation}").status_code == 200
        assert api.get("/auth/me").json()["id"] == me.json()["id"]  # the same local user every time
    with oidc.client(premium["AccessToken"]) as api:
        assert api.get("/auth/me").json()["role"] == "premium"
        assert api.get(f"/conversations/{conversation}").status_code == 404


@pytest.mark.parametrize(("verified", "unverified"), [(True, False), ("true", "false"), ("True", None)])
def test_a_verified_email_claim_links_the_account_by_email(oidc: CognitoRuntime, verified, unverified):
    """Linking needs `email_verified` true: JSON true or the string Cognito's ID tokens carry; anything else,
    or no claim at all, keeps the identities apart."""
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(load_resource("cognitoidp/resources/jwks-private.json")))
    now, email = int(time.time()), f"linked-{uuid.uuid4().hex[:6]}@example.com"
    claims = {
        "iss": oidc.pool.issuer,
        "aud": oidc.pool.client_id,
        "sub": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    first = jwt.encode({**claims, "email": email, "email_verified": verified}, key, "RS256", headers={"kid": "dummy"})
    with oidc.client(first) as api:
        me = api.get("/auth/me").json()
        conversation = api.post("/conversations", json={"title": "mine"}).json()["id"]
    assert (me["email"], me["email_verified"]) == (email, True)
    second_subject = {**claims, "sub": uuid.uuid4().hex, "email": email, "email_verified": unverified}
    unverified_token = jwt.encode(
        {k: v for k, v in second_subject.items() if v is not None}, key, "RS256", headers={"kid": "dummy"}
    )
    with oidc.client(unverified_token) as api:
        other = api.get("/auth/me").json()
        assert api.get(f"/conversations/{conversation}").status_code == 404
    assert other["id"] != me["id"] and other["email"] != email  # an unverified email claims nothing
    relinked = jwt.encode(
        {**claims, "sub": uuid.uuid4().hex, "email": email, "email_verified": True},
        key,
        "RS256",
        headers={"kid": "dummy"},
    )
    with oidc.client(relinked) as api:
        assert api.get("/auth/me").json()["id"] == me["id"]  # another verified identity of the same address


def test_an_email_shaped_like_a_subject_key_does_not_take_that_subjects_account(oidc: CognitoRuntime):
    """Subjects without a verified email get the account `<sub>@<issuer host>`: a verified email of that form
    from another subject must not open it."""
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(load_resource("cognitoidp/resources/jwks-private.json")))
    now, victim_sub = int(time.time()), uuid.uuid4().hex
    claims = {"iss": oidc.pool.issuer, "aud": oidc.pool.client_id, "sub": victim_sub, "iat": now, "exp": now + 300}
    with oidc.client(jwt.encode(claims, key, "RS256", headers={"kid": "dummy"})) as api:
        victim = api.get("/auth/me").json()
        api.post("/conversations", json={"title": "victim's"})
    assert victim["email"] == f"{victim_sub}@cognito-idp.us-east-1.amazonaws.com"
    forged = {**claims, "sub": uuid.uuid4().hex, "email": victim["email"], "email_verified": True}
    with oidc.client(jwt.encode(forged, key, "RS256", headers={"kid": "dummy"})) as api:
        assert api.get("/auth/me").json()["id"] != victim["id"]
        assert api.get("/conversations").json()["items"] == []


def test_account_routes_point_to_the_issuer(oidc: CognitoRuntime):
    with oidc.client() as client:
        for path, body in [
            ("/auth/signup", {"email": "a@example.com", "password": PASSWORD}),
            ("/auth/login", {"email": "a@example.com", "password": PASSWORD}),
            ("/auth/refresh", {"refresh_token": "x"}),
        ]:
            response = client.post(path, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "external_identity_provider"


def test_id_tokens_and_other_audiences_are_refused(oidc: CognitoRuntime):
    _, tokens = _pool_user(oidc)
    with oidc.client(tokens["IdToken"]) as api:
        response = api.get("/auth/me")
    assert response.status_code == 401 and response.json()["error"]["message"] == "an access token is required"
    other_client = oidc.pool.idp.create_user_pool_client(
        UserPoolId=oidc.pool.pool_id, ClientName="other", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    email, _ = _pool_user(oidc)
    foreign = oidc.pool.idp.initiate_auth(
        ClientId=other_client, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD}
    )["AuthenticationResult"]["AccessToken"]
    with oidc.client(foreign) as api:
        response = api.get("/auth/me")
    assert response.status_code == 401 and response.json()["error"]["message"] == "token is for another client"
