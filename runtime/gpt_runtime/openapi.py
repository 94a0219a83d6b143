"""The OpenAPI document, completed after FastAPI builds it.

- Bearer auth: declared on every operation whose route depends on the current user (gpt_runtime.deps
  get_current_user, or get_admin on top of it), found by walking the route's dependencies: a route is public
  exactly when it does not authenticate, so the document cannot drift from the code. (The dependency reads the
  header itself, for speed, so FastAPI's own security schemes cannot see it.)
- The error answers every such route shares: 401 and 429 (the same dependency authenticates and rate-limits);
  with an external identity provider (Cognito, OIDC) also 503 there and on /auth/*.
- The error answers of every route with a body: 400 (not JSON, unparsable form), 413 (over the body limit)
  and 422 (validation).
- The `model` of /v1 bodies: the one model this server serves (known once the lifespan loaded it).
- FastAPI's default 422 (`{"detail": [...]}`, HTTPValidationError) is never sent (gpt_runtime.errors answers
  with ErrorOut), so it is replaced and its schemas dropped.

Route-specific errors are declared on the routers with gpt_runtime.api.responses.errors().
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from gpt_runtime.api.responses import error_response
from gpt_runtime.deps import get_admin, get_current_user
from gpt_runtime.errors import ErrorOut

ERROR_REF = "#/components/schemas/ErrorOut"
_DEFAULT_422 = "#/components/schemas/HTTPValidationError"


def _error(status: int) -> dict[str, Any]:
    response = error_response(status)
    response.pop("model")
    return response | {"content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def _is_default_422(response: dict[str, Any] | None) -> bool:
    schema = (response or {}).get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") == _DEFAULT_422


def _pin_served_model(schema: dict[str, Any], operation: dict[str, Any], model_id: str) -> None:
    """An OpenAI-style body's `model` must name the served model (any other answers 404 model_not_found)."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    component = schema["components"]["schemas"].get(body.get("$ref", "").rsplit("/", 1)[-1], {})
    model = component.get("properties", {}).get("model")
    if model is not None and model.get("type") == "string":
        model["enum"] = [model_id]


_AUTHENTICATING = (get_current_user, get_admin)


def requires_user(dependant: Dependant) -> bool:
    """Whether this dependency tree authenticates the caller (anywhere in it, router-level dependencies too)."""
    return dependant.call in _AUTHENTICATING or any(requires_user(sub) for sub in dependant.dependencies)


def public_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of each documented operation that does not authenticate, derived from the routes.

    Walks the routes as FastAPI's own document does (iter_route_contexts: included routers are resolved lazily,
    their prefixes and dependencies applied), so each route's dependant holds its routers' dependencies too.
    """
    return {
        (path, method.lower())
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.include_in_schema and not requires_user(route.dependant)
        if (path := route.path_format) is not None  # an APIRoute always has a path and methods
        for method in route.methods or ()
    }


def complete_schema(
    schema: dict[str, Any],
    public: Collection[tuple[str, str]],
    identity_provider: bool,
    served_model: str | None = None,
) -> dict[str, Any]:
    """Add security, the shared error answers and the ErrorOut schema to a document FastAPI built; `public`
    holds the (path, method) of the operations without auth."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault("ErrorOut", error_schema)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Access token from POST /auth/login"}
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            shared: list[int] = []
            authenticated = (path, method) not in public
            if authenticated:
                operation["security"] = [{"bearer": []}]
                shared += [401, 429]
            if identity_provider and (authenticated or path.startswith("/auth/")):
                shared.append(503)  # the identity provider is unreachable (idp_unavailable)
            if "requestBody" in operation:
                shared += [400, 413, 422]
            for status in shared:
                responses.setdefault(str(status), _error(status))
            if _is_default_422(responses.get("422")):
                responses["422"] = _error(422)
            if served_model and path.startswith("/v1/"):
                _pin_served_model(schema, operation, served_model)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return schema


def install_openapi(app: FastAPI, *, identity_provider: bool = False) -> None:
    """Make app.openapi() answer the completed document (built once, on first use)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        runtime = getattr(app.state, "runtime", None)  # set once the lifespan has loaded the model
        served_model = runtime.engine.model_id if runtime is not None else None
        schema = complete_schema(build(), public_operations(app), identity_provider, served_model)
        if runtime is not None:
            app.openapi_schema = schema  # complete: kept
        else:
            app.openapi_schema = None  # build() caches FastAPI's part; ours is redone until the model is known
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its schema
