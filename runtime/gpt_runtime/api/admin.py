"""Admin operations: cache statistics and invalidation by pattern, user tiers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gpt_runtime.api.responses import errors
from gpt_runtime.deps import AdminUser, RuntimeDep
from gpt_runtime.domain_errors import NotFound
from gpt_runtime.schemas import RoleIn, UserOut

router = APIRouter(tags=["cache"], responses=errors(403))


@router.get("/cache/stats")
async def cache_stats(_: AdminUser, runtime: RuntimeDep) -> dict:
    """Hits, misses and hit rate since this pod started, by kind (response, fallback, list, conversation)."""
    return runtime.cache.stats() | {"backend_reachable": await runtime.cache.backend.ping()}


@router.delete("/cache")
async def invalidate_cache(
    _: AdminUser,
    runtime: RuntimeDep,
    pattern: Annotated[str, Query(min_length=1, max_length=200, description="glob, e.g. resp:* or conv:USER:*")],
) -> dict:
    return {"pattern": pattern, "deleted": await runtime.cache.invalidate(pattern)}


@router.put("/admin/users/{user_id}/role", tags=["admin"], responses=errors(404))
async def set_role(user_id: str, body: RoleIn, _: AdminUser, runtime: RuntimeDep) -> UserOut:
    """Move a user between tiers (free, premium, admin)."""
    user = await runtime.store.update_user(user_id, role=body.role)
    runtime.auth.forget_user(user_id)
    if user is None:
        raise NotFound("user not found", param="user_id", code="user_not_found")
    return UserOut.of(user)
