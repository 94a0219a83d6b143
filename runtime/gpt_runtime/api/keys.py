"""API keys of the caller: create (the key is shown once), list, revoke. Under /auth/keys.

Managing keys takes a signed-in session (an access token): a leaked API key cannot mint more keys that
would outlive its own revocation.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status

from gpt_runtime.api.responses import errors
from gpt_runtime.deps import CurrentUser, RuntimeDep
from gpt_runtime.domain_errors import Forbidden
from gpt_runtime.schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyListOut, ApiKeyOut
from gpt_runtime.storage import User

router = APIRouter(prefix="/auth/keys", tags=["auth"], responses=errors(403))


async def session_user(request: Request, user: CurrentUser) -> User:
    if getattr(request.state, "via_api_key", False):
        raise Forbidden(
            "API keys cannot manage API keys: use an access token from /auth/login", code="session_required"
        )
    return user


SessionUser = Annotated[User, Depends(session_user)]
KeyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(user: SessionUser, runtime: RuntimeDep, body: ApiKeyIn | None = None) -> ApiKeyCreatedOut:
    """A new long-lived key for OpenAI clients (`Authorization: Bearer sk-gpt-…`); the full key is in this
    answer only. It acts as you: your role, rate limits and quotas."""
    record, key = await runtime.api_keys.create(user, (body or ApiKeyIn()).name)
    return ApiKeyCreatedOut(**ApiKeyOut.of(record).model_dump(), key=key)


@router.get("")
async def list_keys(user: SessionUser, runtime: RuntimeDep) -> ApiKeyListOut:
    """Your keys, oldest first: names, prefixes and last use; never the keys."""
    return ApiKeyListOut(data=[ApiKeyOut.of(key) for key in await runtime.api_keys.list(user.id)])


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def revoke_key(key_id: KeyId, user: SessionUser, runtime: RuntimeDep) -> Response:
    """Revoke one of your keys: it stops working at once on this replica, within seconds on the others."""
    await runtime.api_keys.revoke(user.id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
