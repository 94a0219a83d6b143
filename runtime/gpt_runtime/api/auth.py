"""Account routes: signup, login, refresh, me, email verification, password reset."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from gpt_runtime.api.responses import errors
from gpt_runtime.deps import CurrentUser, RuntimeDep, limit_by_ip
from gpt_runtime.schemas import (
    AcceptedOut,
    EmailIn,
    LoginIn,
    RefreshIn,
    ResetPasswordIn,
    SignupIn,
    SignupOut,
    TokenIn,
    TokenOut,
    UserOut,
)

router = APIRouter(prefix="/auth", tags=["auth"], responses=errors(429))
_per_ip = [Depends(limit_by_ip)]


@router.post("/signup", status_code=status.HTTP_201_CREATED, dependencies=_per_ip, responses=errors(409))
async def signup(body: SignupIn, runtime: RuntimeDep) -> SignupOut:
    """Create an account; the verification link goes only by mail."""
    return SignupOut(user=UserOut.of(await runtime.auth.signup(body.email, body.password)))


@router.post("/login", dependencies=_per_ip, responses=errors(401, 403))
async def login(body: LoginIn, runtime: RuntimeDep) -> TokenOut:
    pair = await runtime.auth.login(body.email, body.password)
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@router.post("/refresh", dependencies=_per_ip, responses=errors(401))
async def refresh(body: RefreshIn, runtime: RuntimeDep) -> TokenOut:
    pair = await runtime.auth.refresh(body.refresh_token)
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@router.post("/verify-email", dependencies=_per_ip)
async def verify_email(body: TokenIn, runtime: RuntimeDep) -> UserOut:
    return UserOut.of(await runtime.auth.verify_email(body.token))


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED, dependencies=_per_ip)
async def forgot_password(body: EmailIn, runtime: RuntimeDep) -> AcceptedOut:
    """Always the same 202, in the same time, whether or not the account exists (emails cannot be probed);
    the reset link goes only by mail."""
    await runtime.auth.forgot_password(body.email)
    return AcceptedOut(status="if the account exists, a reset email was sent")


@router.post("/reset-password", dependencies=_per_ip)
async def reset_password(body: ResetPasswordIn, runtime: RuntimeDep) -> AcceptedOut:
    await runtime.auth.reset_password(body.token, body.new_password)
    return AcceptedOut(status="password changed")
