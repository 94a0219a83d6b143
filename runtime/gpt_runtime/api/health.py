"""Liveness, readiness and Prometheus metrics (no auth: probes and scrapers call them)."""

from __future__ import annotations

import socket

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gpt_runtime.api.responses import error_response
from gpt_runtime.deps import RuntimeDep
from gpt_runtime.errors import error_body
from gpt_runtime.scrape import refresh

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> dict:
    """Liveness: the process serves HTTP; says which revision, track and pod answered."""
    settings = runtime.settings
    return {
        "status": "ok",
        "revision": settings.revision,
        "track": settings.track,
        "instance": socket.gethostname(),
    }


@router.get("/ready", responses={503: error_response(503, "Not ready: the body's `checks` name what fails.")})
async def ready(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Readiness: the model is loaded, the backends answer and the in-process job worker (if any) runs.
    503 from SIGTERM on: the pod drains (shutdown.py)."""
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:
        body = error_body("shutting down: finishing open requests", "overloaded", None, "shutting_down")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    engine = await runtime.engine.health()
    checks = {"engine": engine.ready, "database": await runtime.store.ping(), "files": await runtime.files.ping()}
    worker = getattr(request.app.state, "worker", None)
    worker_problem = worker.problem() if worker is not None else None
    if worker is not None:
        checks["worker"] = worker_problem is None
    body = {"status": "ready", "model": engine.model_id, "checks": checks}
    if all(checks.values()):
        return JSONResponse(body)
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    reason = f"not ready: {failing}" + (f" ({worker_problem})" if worker_problem else "")
    body = error_body(reason, "overloaded", None, "not_ready") | {"checks": checks}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text exposition; the gauges of engine, admission and job queue are read at scrape time."""
    await refresh(runtime.metrics, runtime.engine, runtime.gate, runtime.queue)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
