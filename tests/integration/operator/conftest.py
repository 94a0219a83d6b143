"""A kmock Kubernetes emulator with the server-side behaviour kopf and the operator rely on, and fixtures
that run the real kopf operator against it over HTTP.

kmock 0.8's emulator stores objects as given. This adapter adds what a real API server does and the tests
need: uid / resourceVersion / generation / creationTimestamp; server-side apply (create or replace the
applied fields, keep server fields and status, a Service's clusterIP among them); status-subresource patches
that touch only status; 422 for a failed JSON-patch `test` (kmock answers 500); list/watch honouring
`labelSelector` and `resourceVersion` (kmock replays every stored object on each watch, which kopf would take
for fresh events).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import pytest
import pytest_asyncio
import yaml
from gpt_operator.main import OperatorState, operate
from gpt_operator.settings import OperatorSettings
from gpt_operator.spec import GROUP, PLURAL, VERSION
from kmock._internal import dicts, enums, rendering

CRD_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
NAMESPACE = "ml"
ROOT = Path(__file__).resolve().parents[3]


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return aiohttp.web.json_response(body, status=code)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale the API server derives from the CRD's scale subresource paths."""
    meta = obj["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {
            "replicas": obj.get("status", {}).get("replicas", 0),
            "selector": obj.get("status", {}).get("selector", ""),
        },
    }


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the server-side metadata and semantics listed in the module docstring."""

    revision = 0

    def _stamp(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        type(self).revision += 1
        meta = new.setdefault("metadata", {})
        meta["resourceVersion"] = str(type(self).revision)
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["generation"] = 1
        else:
            old_meta = old.get("metadata", {})
            for key in ("uid", "creationTimestamp"):
                meta[key] = old_meta.get(key)
            address = (old.get("spec") or {}).get("clusterIP")
            if old.get("kind") == "Service" and address:  # allocated once, kept by every update
                new.setdefault("spec", {}).setdefault("clusterIP", address)
            bare_old = {k: v for k, v in old.items() if k not in ("metadata", "status")}
            bare_new = {k: v for k, v in new.items() if k not in ("metadata", "status")}
            meta["generation"] = old_meta.get("generation", 1) + (1 if bare_old != bare_new else 0)
        return new

    async def store(self, resource: Any, namespace: str, name: str, new: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object, stamping server metadata and notifying watchers."""
        key = (resource, namespace, name)
        exists = key in self._objects and not self._objects[key].deleted
        old = copy.deepcopy(self._objects[key].raw) if exists else None
        new = self._stamp(new, old)
        if key in self._objects:
            self._objects[key].create(new)
        else:
            self._objects[key] = new
        await self._buses[resource].put({"type": "MODIFIED" if exists else "ADDED", "object": copy.deepcopy(new)})
        return new

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            if "generateName" in meta and "name" not in meta:
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            self._stamp(request.data, None)
            return await super()._handle(request)
        if request.action == enums.action.UPDATE and request.name is not None:
            return await self._update(request)
        if request.subresource == "scale" and request.method == "GET":
            obj = self.get_key((request.resource, request.namespace, request.name))
            if obj is None:
                return _status(404, "NotFound", f"{request.name} not found")
            return aiohttp.web.json_response(_scale(obj))
        return await super()._handle(request)

    def get_key(self, key: Any) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    async def _update(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        content_type = request.headers.get("Content-Type", "")
        refused = getattr(self, "refuse", {}).get(request.resource.plural)
        if refused:  # a test makes the API server reject writes of this resource
            return _status(*refused)
        async with self._lock:
            exists = key in self._objects and not self._objects[key].deleted
            old = copy.deepcopy(self._objects[key].raw) if exists else None
            data = request.data
            if "apply-patch" in content_type:
                new = copy.deepcopy(old) if old else {}
                for field, value in data.items():
                    if field == "metadata":
                        meta = new.setdefault("metadata", {})
                        for mkey in ("labels", "annotations", "ownerReferences"):
                            meta.pop(mkey, None)
                        meta.update(copy.deepcopy(value))
                        meta["namespace"] = request.namespace
                    elif field != "status":
                        new[field] = copy.deepcopy(value)
            elif old is None:
                return _status(404, "NotFound", f"{request.name} not found")
            elif isinstance(data, list):
                try:
                    new = jsonpatch.apply_patch(old, data, in_place=False)
                except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
                    return _status(422, "Invalid", str(exc))
            elif request.subresource == "status":
                new = dicts.patch_dict(copy.deepcopy(old), {"status": data.get("status")})
            elif request.subresource == "scale":  # what an HPA writes: the Scale's spec.replicas
                new = dicts.patch_dict(copy.deepcopy(old), {"spec": {"replicas": data["spec"]["replicas"]}})
            else:
                changes = {k: v for k, v in data.items() if k != "status"}
                new = dicts.patch_dict(copy.deepcopy(old), changes)
            stored = await self.store(request.resource, request.namespace, request.name, new)
        if request.subresource == "scale":
            return aiohttp.web.json_response(_scale(stored))
        return aiohttp.web.json_response(stored, status=200 if exists else 201)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        result["items"] = [o for o in result["items"] if _matches(o.get("metadata", {}).get("labels") or {}, selector)]
        result["metadata"] = {"resourceVersion": str(type(self).revision)}
        return result

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        selector = request.params.get("labelSelector")
        try:
            since = int(request.params.get("resourceVersion") or 0)
        except ValueError:
            since = 0

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            in_ns = request.namespace is None or meta.get("namespace") == request.namespace
            return in_ns and _rv(obj) > since and _matches(meta.get("labels") or {}, selector)

        async with self._lock:
            current = [
                copy.deepcopy(obj.raw)
                for (resource, _, _), obj in self._objects.items()
                if resource == request.resource and not obj.deleted
            ]
        for obj in sorted(current, key=_rv):
            if wanted(obj):
                yield {"type": "ADDED", "object": obj}
        async for event in self._buses[request.resource]:
            if wanted(event.get("object", {})):
                yield event

    # --- helpers for tests ---

    def get(self, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def names(self, resource: str, namespace: str = NAMESPACE) -> list[str]:
        res = kmock.resource(resource)
        return sorted(n for (r, ns, n), o in self._objects.items() if r == res and ns == namespace and not o.deleted)

    def writes(self, path_part: str = "") -> list[str]:
        """Every write request so far, as 'METHOD path'."""
        return [
            f"{getattr(r.method, 'value', r.method)} {r.url.path}"  # kmock's method is an enum
            for r in self._requests
            if r.method in ("POST", "PUT", "PATCH", "DELETE") and path_part in r.url.path
        ]

    async def put_object(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        async with self._lock:
            return await self.store(kmock.resource(resource), meta.get("namespace", NAMESPACE), meta["name"], obj)

    async def settle_deployments(self, ready: bool = True) -> None:
        """Play the Deployment controller: every Deployment reports its replicas (un)ready."""
        for name in self.names("apps/v1/deployments"):
            dep = self.get("apps/v1/deployments", name)
            assert dep is not None
            n = dep["spec"]["replicas"]
            status = {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": n,
                "readyReplicas": n if ready else 0,
                "updatedReplicas": n if ready else 0,
                "availableReplicas": n if ready else 0,
            }
            if dep.get("status") != status:
                await self.put_object("apps/v1/deployments", {**dep, "status": status})


@pytest_asyncio.fixture()
async def cluster() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        emulator.resources.load_bundled()
        crd = yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text())
        emulator.resources[CRD_RESOURCE] = kmock.ResourceInfo(
            kind=crd["spec"]["names"]["kind"],
            singular=crd["spec"]["names"]["singular"],
            namespaced=True,
            shortnames=set(crd["spec"]["names"]["shortNames"]),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status", "scale"},
        )
        emulator.resources["monitoring.coreos.com/v1/servicemonitors"] = kmock.ResourceInfo(
            kind="ServiceMonitor", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
        )
        yield emulator


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock(datetime(2026, 3, 4, 12, 0, tzinfo=UTC))  # a Wednesday, noon UTC


@contextlib.asynccontextmanager
async def running_operator(
    cluster: Emulator, clock: Clock, liveness_endpoint: str = ""
) -> AsyncIterator[OperatorState]:
    """The operator in its own thread and event loop, as in production: kopf cancels every task started
    after it in its loop when it stops, which would include the test's own tasks. Cluster-wide, alone (no
    Lease); its health server (and /metrics) only where `liveness_endpoint` names one."""
    settings = OperatorSettings(
        server=str(cluster.url),
        resync_seconds=0.2,
        secret_check_interval_s=0.5,
        leader_election=False,
        liveness_endpoint=liveness_endpoint,
    )
    state = OperatorState(settings=settings, clock=clock)
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(operate(state, stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # reported at teardown
            errors.append(exc)

    thread = threading.Thread(target=run, name="gpt-operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 20), f"the operator did not start: {errors}"
    yield state
    stop.set()
    await asyncio.to_thread(thread.join, 20)
    assert not thread.is_alive(), "the operator did not stop"
    assert not errors, errors


@pytest_asyncio.fixture()
async def operator(cluster: Emulator, clock: Clock) -> AsyncIterator[OperatorState]:
    """The operator, no health port."""
    async with running_operator(cluster, clock) as state:
        yield state


async def _eventually(check: Callable[[], Any], within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value (returned) or raise with its last result."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = check()
        except (KeyError, TypeError, AssertionError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {within}s; last: {last!r}")


@pytest.fixture()
def eventually() -> Callable[..., Any]:
    return _eventually


@pytest.fixture()
def gptd() -> Callable[..., dict[str, Any]]:
    def make(name: str = "chat", **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GPTDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"source": "builtin:tiny"}, **spec},
        }

    return make
