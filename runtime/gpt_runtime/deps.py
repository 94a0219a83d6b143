"""FastAPI dependencies: the app's parts from app.state, the current user, and the rate limit."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from gpt_model.protocol import EngineClient

from gpt_runtime.auth import AuthProvider
from gpt_runtime.auth.api_keys import ApiKeys, is_api_key
from gpt_runtime.auth.bearer import bearer_token
from gpt_runtime.backends import JobQueue, WindowCounter
from gpt_runtime.backends.files import FileStore
from gpt_runtime.domain_errors import Forbidden, Unauthenticated
from gpt_runtime.mail.outbox import Outbox
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.admission import AdmissionGate
from gpt_runtime.services.cache import CacheService
from gpt_runtime.services.embeddings import EmbeddingService
from gpt_runtime.services.generation import GenerationService
from gpt_runtime.services.images import ImageService
from gpt_runtime.services.jobs import JobService
from gpt_runtime.services.limits import Limits, rate_headers
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Store, User
from gpt_runtime.voice import VoiceService


@dataclass
class Runtime:
    """Everything the lifespan builds; stored on app.state.runtime."""

    settings: RuntimeSettings
    store: Store
    engine: EngineClient
    auth: AuthProvider
    metrics: Metrics
    counter: WindowCounter
    limits: Limits
    cache: CacheService
    gate: AdmissionGate
    queue: JobQueue
    files: FileStore
    generation: GenerationService
    jobs: JobService
    api_keys: ApiKeys
    outbox: Outbox
    embeddings: EmbeddingService | None = None  # None: GPT_EMBEDDING_MODEL_SOURCE=none (the routes answer 501)
    images: ImageService | None = None  # None: no GPT_IMAGE_MODEL_SOURCE (the image routes answer 501)
    voice: VoiceService | None = None  # None: the voice routes answer 501 (job workers build none)


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def set_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers the middleware adds to this request's response, whatever the route returns."""
    request.state.extra_headers = {**getattr(request.state, "extra_headers", {}), **headers}


async def get_current_user(request: Request) -> User:
    """The caller, from a valid bearer token; each call counts against the caller's rate limit.

    Reads the header itself (the hottest dependency of all); app.py declares the scheme in OpenAPI.
    """
    already = request.scope.get("state", {}).get("user")
    if already is not None:  # authenticated and counted by the read cache in front of the router
        return already
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthenticated("missing bearer token", code="missing_token")
    runtime: Runtime = request.app.state.runtime
    user = await runtime.auth.authenticate(token)
    request.state.via_api_key = is_api_key(token)
    state = await runtime.limits.check_user(user)
    if state is not None:
        set_response_headers(request, rate_headers(state))
    return user


def client_bucket(host: str) -> str:
    """The per-address limit's key: an IPv4 address, or an IPv6 client's whole /64 (one subscriber gets a /64
    or more, so per-address buckets would let them rotate through 2^64 of them)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def limit_by_ip(request: Request, runtime: RuntimeDep) -> None:
    """Rate limit for routes without a user (signup, login, ...): per client address (IPv6: per /64)."""
    state = await runtime.limits.check_ip(client_bucket(request.client.host) if request.client else "unknown")
    if state is not None:
        set_response_headers(request, rate_headers(state))


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise Forbidden("this route is for admins", code="admin_only")
    return user


AdminUser = Annotated[User, Depends(get_admin)]
