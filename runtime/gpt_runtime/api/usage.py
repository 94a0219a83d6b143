"""GET /usage: the caller's requests, tokens and estimated cost over the last 24 hours, and their limits."""

from __future__ import annotations

from fastapi import APIRouter

from gpt_runtime.deps import CurrentUser, RuntimeDep

router = APIRouter(tags=["usage"])


@router.get("/usage")
async def usage(user: CurrentUser, runtime: RuntimeDep) -> dict:
    return await runtime.limits.usage(user)
