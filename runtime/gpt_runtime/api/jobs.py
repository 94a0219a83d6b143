"""GET /jobs/{id}: where an async generation stands, and its result once done."""

from __future__ import annotations

from fastapi import APIRouter

from gpt_runtime.api.responses import errors
from gpt_runtime.deps import CurrentUser, RuntimeDep
from gpt_runtime.domain_errors import NotFound
from gpt_runtime.schemas import JobOut

router = APIRouter(tags=["generation"])


@router.get("/jobs/{job_id}", responses=errors(404))
async def get_job(job_id: str, user: CurrentUser, runtime: RuntimeDep) -> JobOut:
    job = await runtime.store.get_job(user.id, job_id)
    if job is None:
        raise NotFound("job not found", param="job_id", code="job_not_found")
    return JobOut.of(job)
