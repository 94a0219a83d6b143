"""FastAPI dependencies: the app's parts from app.state, and the current user from the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from gpt_model.protocol import EngineClient

from gpt_runtime.auth import AuthProvider
from gpt_runtime.errors import Unauthorized
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.generation import GenerationService
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Store, User


@dataclass
class Runtime:
    """Everything the lifespan builds; stored on app.state.runtime."""

    settings: RuntimeSettings
    store: Store
    engine: EngineClient
    auth: AuthProvider
    metrics: Metrics
    generation: GenerationService


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/login")


async def get_current_user(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token", code="missing_token")
    return await runtime.auth.authenticate(credentials.credentials)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CurrentUser = Annotated[User, Depends(get_current_user)]
