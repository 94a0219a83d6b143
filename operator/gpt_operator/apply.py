"""The operator's Kubernetes I/O: list children, server-side apply, prune (the only module that calls the API
besides kopf itself, which patches the GPTDeployment's status and posts events for main.py).

Every child is applied with one field manager and `force=true` (the operator owns what it renders), and
only when the live object differs from what is wanted, so a steady state makes no writes.

One child is not rendered: the Secret holding the runtime pods' shared JWT signing key (ensure_jwt_secret).
It is created once with a random value, never patched or rotated, and never pruned (it is not in
CHILD_KINDS, so nothing here lists it); the garbage collector deletes it with its GPTDeployment.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gpt_operator.naming import children_selector, common_labels, jwt_secret_name, owner_reference

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # JSON is YAML, so the body is JSON
# Read an object's metadata only (no `data` of a Secret comes back).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
JWT_SECRET_KEY = "GPT_JWT_SECRET"
JWT_SECRET_BYTES = 48

# kind -> (apiVersion, plural); every kind the operator renders, in prune order.
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitors"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Service": ("v1", "services"),
    "Deployment": ("apps/v1", "deployments"),
    "ConfigMap": ("v1", "configmaps"),
}
OPTIONAL_KINDS = {"ServiceMonitor", "HTTPRoute"}  # their CRDs may be missing in a cluster


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """How to reach the API server (built from kopf's ConnectionInfo in main.py)."""

    server: str
    token: str | None = None
    scheme: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    insecure: bool = False


def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


def _ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https"):
        return False
    if creds.insecure:
        return False
    ctx = ssl.create_default_context(cafile=creds.ca_path)
    if creds.ca_data:
        ctx.load_verify_locations(cadata=_pem(creds.ca_data).decode())
    if creds.certificate_path and creds.private_key_path:
        ctx.load_cert_chain(creds.certificate_path, creds.private_key_path)
    elif creds.certificate_data and creds.private_key_data:
        # Inline client certificates (kind writes kubeconfigs this way): ssl loads chains from files only,
        # so they pass through a private temporary directory that is gone once loaded.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "client.crt"), Path(tmp, "client.key")
            for path, data in ((cert, creds.certificate_data), (key, creds.private_key_data)):
                path.touch(mode=0o600)
                path.write_bytes(_pem(data))
            ctx.load_cert_chain(cert, key)
    return ctx


def _pem(data: bytes | str) -> bytes:
    """PEM bytes from a kubeconfig's `*-data` field (base64 of PEM, or PEM already)."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if b"BEGIN" in raw else base64.b64decode(raw)


class KubeClient:
    """A small async Kubernetes REST client on aiohttp (kopf's own HTTP library)."""

    def __init__(self, creds: Credentials, *, field_manager: str, timeout_s: float = 30.0) -> None:
        self.creds = creds
        self.field_manager = field_manager
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "gpt-operator"}
            if self.creds.token:
                headers["Authorization"] = f"{self.creds.scheme or 'Bearer'} {self.creds.token}"
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self.creds))
            self._session = aiohttp.ClientSession(
                base_url=self.creds.server.rstrip("/") + "/",
                headers=headers,
                connector=connector,
                timeout=self._timeout,
            )
        return self._session

    def renew(self, creds: Credentials) -> None:
        """Use new credentials from the next request on; requests in flight finish on the old session."""
        self.creds = creds
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def close(self) -> None:
        for session in [*self._retired, self._session]:
            if session is not None:
                await session.close()
        self._retired.clear()
        self._session = None

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
        session = await self._http()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type or "application/json"} if body is not None else {}
        if accept:
            headers["Accept"] = accept
        async with session.request(method, path.lstrip("/"), params=params, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiError(resp.status, message)
            return json.loads(text) if text else {}

    async def list(self, api_version: str, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self.request(
            "GET", _path(api_version, plural, namespace), params={"labelSelector": label_selector}
        )
        return list(result.get("items") or [])

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        api_version, plural = CHILD_KINDS[obj["kind"]]
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            _path(api_version, plural, meta["namespace"], meta["name"]),
            params={"fieldManager": self.field_manager, "force": "true"},
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        api_version, plural = CHILD_KINDS[kind]
        await self.request(
            "DELETE", _path(api_version, plural, namespace, name), body={"propagationPolicy": "Background"}
        )

    async def exists(self, api_version: str, plural: str, namespace: str, name: str) -> bool:
        """Whether an object exists, reading its metadata only."""
        try:
            await self.request("GET", _path(api_version, plural, namespace, name), accept=METADATA_ONLY)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def create(self, obj: dict[str, Any], api_version: str, plural: str) -> dict[str, Any]:
        path = _path(api_version, plural, obj["metadata"]["namespace"])
        return await self.request("POST", path, params={"fieldManager": self.field_manager}, body=obj)


def is_subset(wanted: Any, live: Any) -> bool:
    """Whether every field we want is already live (the server may add defaults and status)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(wanted) == len(live) and all(map(is_subset, wanted, live))
    return wanted == live


def with_owner(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner_reference(owner)]}}


@dataclass
class SyncResult:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # optional kinds whose API is missing

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned)


async def list_children(client: KubeClient, namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
    api_version, plural = CHILD_KINDS[kind]
    try:
        return await client.list(api_version, plural, namespace, children_selector(name))
    except ApiError as exc:
        if exc.status == 404 and kind in OPTIONAL_KINDS:
            return []
        raise


async def read_children(client: KubeClient, namespace: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every child of one GPTDeployment, by (kind, name): one labelled list per kind."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in CHILD_KINDS:
        for obj in await list_children(client, namespace, name, kind):
            live[(kind, obj["metadata"]["name"])] = obj
    return live


async def sync_children(
    client: KubeClient,
    owner: dict[str, Any],
    desired: list[dict[str, Any]],
    live: dict[tuple[str, str], dict[str, Any]],
) -> SyncResult:
    """Apply what differs from `live` (see read_children), then delete our children no longer desired."""
    meta = owner["metadata"]
    namespace = meta["namespace"]
    result = SyncResult()
    wanted_keys = set()
    for obj in desired:
        obj = with_owner(obj, owner)
        key = (obj["kind"], obj["metadata"]["name"])
        wanted_keys.add(key)
        label = f"{key[0]}/{key[1]}"
        if key in live and is_subset(obj, live[key]):
            result.unchanged.append(label)
            continue
        try:
            await client.apply(obj)
        except ApiError as exc:
            if exc.status == 404 and obj["kind"] in OPTIONAL_KINDS:
                result.skipped.append(label)
                continue
            raise
        result.applied.append(label)
    for key, obj in live.items():
        owners = obj["metadata"].get("ownerReferences") or []
        ours = any(ref.get("uid") == meta.get("uid") for ref in owners)
        if key not in wanted_keys and ours:
            try:
                await client.delete(key[0], namespace, key[1])
            except ApiError as exc:
                if exc.status != 404:
                    raise
            result.pruned.append(f"{key[0]}/{key[1]}")
    return result


def jwt_secret(owner: dict[str, Any], value: str) -> dict[str, Any]:
    """The Secret of the runtime pods' shared JWT signing key, owned by the GPTDeployment."""
    meta = owner["metadata"]
    encoded = base64.b64encode(value.encode()).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": jwt_secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": common_labels(meta["name"]),
        },
        "type": "Opaque",
        "data": {JWT_SECRET_KEY: encoded},
    }
    return with_owner(secret, owner)


async def ensure_jwt_secret(client: KubeClient, owner: dict[str, Any]) -> bool:
    """Create `<name>-jwt` with a fresh random key if it is missing; True if this call created it.

    An existing Secret is left exactly as it is (never patched, overwritten or rotated), whoever made it;
    a 409 means another writer created it meanwhile. The key is never logged or returned.
    """
    meta = owner["metadata"]
    if await client.exists("v1", "secrets", meta["namespace"], jwt_secret_name(meta["name"])):
        return False
    secret = jwt_secret(owner, secrets.token_urlsafe(JWT_SECRET_BYTES))
    try:
        await client.create(secret, "v1", "secrets")
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def status_changes(previous: dict[str, Any] | None, wanted: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning the live status into the wanted one: changed keys, None for removed ones."""
    previous = previous or {}
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        if value is None:
            if previous.get(key) is not None:
                patch[key] = None
        elif previous.get(key) != value:
            patch[key] = value
    return patch
