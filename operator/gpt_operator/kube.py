"""The operator's Kubernetes client: the official async client (kubernetes_asyncio) for authentication and
transport, and a few generic verbs on top of it (get, list, watch, server-side apply, create, delete).

How it connects, in order: an explicit server URL (e.g. `kubectl proxy`'s), the in-cluster service account
(its projected token is re-read as the kubelet rotates it), or a kubeconfig (client certificates, tokens and
exec credential plugins such as `aws eks get-token`, `gke-gcloud-auth-plugin` and `kubelogin`). A 401 makes
the client load its credentials again once and retry, so an expired exec token is replaced on demand.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # JSON is YAML, so the body is JSON
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
AUTH = ["BearerToken"]
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server refused a request (status >= 400) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def resource_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


@dataclass(frozen=True)
class Login:
    """The credentials in use, in the terms kopf's ConnectionInfo takes (main.py builds one from this)."""

    server: str
    token: str | None
    ca_path: str | None
    certificate_path: str | None
    private_key_path: str | None
    insecure: bool


def in_cluster(environ: Mapping[str, str]) -> bool:
    """Whether this process runs in a pod with a service account token (as client-go decides)."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(SERVICE_ACCOUNT_TOKEN)


async def load_configuration(server: str = "", environ: Mapping[str, str] = os.environ) -> k8s.Configuration:
    """A client Configuration: `server` as is (no credentials), else in-cluster, else the kubeconfig."""
    configuration = k8s.Configuration()
    if server:
        configuration.host = server.rstrip("/")
        return configuration
    if in_cluster(environ):
        k8s_config.load_incluster_config(client_configuration=configuration)
        return configuration
    await k8s_config.load_kube_config(
        config_file=environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None,
        client_configuration=configuration,
        persist_config=False,
    )
    return configuration


def login_of(configuration: k8s.Configuration) -> Login:
    token = configuration.api_key.get("BearerToken")
    if token and token.lower().startswith("bearer "):
        token = token[len("bearer ") :]
    assert configuration.host is not None, "a loaded configuration names its API server"
    return Login(
        server=configuration.host,
        token=token,
        ca_path=configuration.ssl_ca_cert,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        insecure=not configuration.verify_ssl,
    )


class KubeClient:
    """Generic verbs over kubernetes_asyncio's ApiClient; every error becomes an ApiError."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        *,
        field_manager: str,
        timeout_s: float = 30.0,
        reload: Callable[[], Any] | None = None,
    ) -> None:
        self.field_manager = field_manager
        self.timeout_s = timeout_s
        self._reload = reload  # async () -> Configuration, called once on a 401
        self.configuration = configuration
        self._api: k8s.ApiClient | None = None  # made in the event loop, at the first request
        self._retired: list[k8s.ApiClient] = []

    def _client(self) -> k8s.ApiClient:
        if self._api is None:
            self._api = k8s.ApiClient(configuration=self.configuration)
            self._api.user_agent = "gpt-operator"
        return self._api

    async def relogin(self) -> None:
        """Load the credentials again (an exec plugin runs again); requests in flight finish on the old ones."""
        if self._reload is None:
            return
        self.configuration = await self._reload()
        if self._api is not None:
            self._retired.append(self._api)
        self._api = None

    async def close(self) -> None:
        for api in [*self._retired, self._api]:
            if api is not None:
                await api.close()
        self._retired.clear()
        self._api = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None,
        body: Any,
        content_type: str,
        accept: str,
        timeout_s: float | None,
    ) -> Any:
        headers = {"Accept": accept or "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        return await self._client().call_api(
            path,
            method,
            query_params=list((params or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=AUTH,
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout_s or self.timeout_s,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "",
        accept: str = "",
    ) -> dict[str, Any]:
        """One request; the JSON answer. A 401 reloads the credentials and retries once."""
        for attempt in (1, 2):
            try:
                response = await self._call(
                    method, path, params=params, body=body, content_type=content_type, accept=accept, timeout_s=None
                )
                async with response:
                    text = await response.text()
                if response.status == 401 and attempt == 1 and self._reload is not None:
                    log.info("the API server answered 401: loading credentials again")
                    await self.relogin()
                    continue
                if response.status >= 400:
                    raise ApiError(response.status, _message(text) or str(response.reason))
                return json.loads(text) if text else {}
            except ApiException as exc:  # the client's own failures (e.g. status 0: no connection)
                raise ApiError(exc.status or 0, _message(exc.body) or str(exc.reason)) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", resource_path(api_version, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def exists(self, api_version: str, plural: str, namespace: str, name: str) -> bool:
        """Whether an object exists, reading its metadata only (no `data` of a Secret comes back)."""
        try:
            await self.request("GET", resource_path(api_version, plural, namespace, name), accept=METADATA_ONLY)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str = ""
    ) -> dict[str, Any]:
        """The whole list object (items and metadata.resourceVersion)."""
        params = {"labelSelector": label_selector} if label_selector else {}
        return await self.request("GET", resource_path(api_version, plural, namespace), params=params)

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str,
        label_selector: str = "",
        timeout_s: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from resource_version, with bookmarks, until the server ends it."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        try:
            response = await self._call(
                "GET",
                resource_path(api_version, plural, namespace),
                params=params,
                body=None,
                content_type="",
                accept="",
                timeout_s=timeout_s + 30,
            )
        except ApiException as exc:
            raise ApiError(exc.status or 0, _message(exc.body) or str(exc.reason)) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from None
        if response.status >= 400:
            text = await response.text()
            response.release()
            if response.status == 401 and self._reload is not None:
                await self.relogin()
            raise ApiError(response.status, _message(text) or str(response.reason))
        try:
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApiError(0, f"watch ended: {type(exc).__name__}: {exc}") from None
        finally:
            response.release()

    async def apply(self, obj: dict[str, Any], api_version: str, plural: str) -> dict[str, Any]:
        """Server-side apply with this client's field manager, taking over conflicting fields."""
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            resource_path(api_version, plural, meta.get("namespace"), meta["name"]),
            params={"fieldManager": self.field_manager, "force": "true"},
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    async def merge_patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, patch: dict[str, Any], *, status=False
    ) -> dict[str, Any]:
        path = resource_path(api_version, plural, namespace, name) + ("/status" if status else "")
        return await self.request(
            "PATCH",
            path,
            params={"fieldManager": self.field_manager},
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def create(self, obj: dict[str, Any], api_version: str, plural: str) -> dict[str, Any]:
        path = resource_path(api_version, plural, obj["metadata"].get("namespace"))
        return await self.request("POST", path, params={"fieldManager": self.field_manager}, body=obj)

    async def replace(self, obj: dict[str, Any], api_version: str, plural: str) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(api_version, plural, meta.get("namespace"), meta["name"])
        return await self.request("PUT", path, params={"fieldManager": self.field_manager}, body=obj)

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        await self.request(
            "DELETE",
            resource_path(api_version, plural, namespace, name),
            body={"propagationPolicy": "Background"},
        )


def _message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not body:
        return ""
    try:
        return str(json.loads(body).get("message", body))
    except (ValueError, AttributeError):
        return str(body)
