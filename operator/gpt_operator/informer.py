"""An in-memory cache of the operator's children, kept by LIST+WATCH (client-go's informer, in small).

One reflector per child kind (per watched namespace, or cluster-wide) lists the objects labelled
`app.kubernetes.io/managed-by=gpt-operator` once, then follows a watch with bookmarks from that list's
resourceVersion, and lists again only when the server says the version is gone (410). Reconciles read
children from here, so a resync tick costs no API reads however many GPTDeployments there are; the label
selector is applied by the server, so unrelated Deployments, Services and ConfigMaps never reach the
operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gpt_operator.kube import ApiError, KubeClient
from gpt_operator.naming import MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL

log = logging.getLogger(__name__)

SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
OPTIONAL_RETRY_S = 60.0  # how often to look again for an optional kind whose API is missing


def _rv(obj: dict[str, Any]) -> int | None:
    value = obj.get("metadata", {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def newer_or_same(candidate: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether `candidate` may replace `current` (resourceVersions compared as numbers when they are)."""
    if current is None:
        return True
    new, old = _rv(candidate), _rv(current)
    return new is None or old is None or new >= old


@dataclass
class Reflector:
    """The objects of one kind in one scope, by (namespace, name)."""

    client: KubeClient
    kind: str
    api_version: str
    plural: str
    namespace: str | None
    optional: bool = False
    selector: str = SELECTOR
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    available: bool = True
    lists: int = 0  # how many LISTs it made (a cost the tests and benchmarks read)
    by_instance: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (ns, GPTDeployment) -> names
    on_change: Callable[[str, str], None] | None = None  # (namespace, GPTDeployment name) of a changed child

    async def run(self, backoff_max_s: float = 30.0) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._list()
                backoff = 1.0
                await self._follow(version)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status == 404 and self.optional:
                    self.available = False
                    self.objects.clear()
                    self.synced.set()  # nothing of a kind the cluster does not have
                    await asyncio.sleep(OPTIONAL_RETRY_S)
                    continue
                if exc.status != 410:
                    log.warning(f"{self.kind}: {exc}; listing again in {backoff:.0f}s")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, backoff_max_s)

    async def _list(self) -> str:
        result = await self.client.list(self.api_version, self.plural, self.namespace, self.selector)
        self.lists += 1
        self.available = True
        self.objects.clear()
        self.by_instance.clear()
        for obj in result.get("items") or []:
            self.store(obj)
        self.synced.set()
        return str(result.get("metadata", {}).get("resourceVersion") or "")

    async def _follow(self, version: str) -> None:
        while True:
            async for event in self.client.watch(
                self.api_version, self.plural, self.namespace, resource_version=version, label_selector=self.selector
            ):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("message") or "watch error"))
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED"):
                    self.store(obj)
                elif kind == "DELETED":
                    self.forget(*_key(obj))
                if kind in ("ADDED", "MODIFIED", "DELETED") and self.on_change is not None and _instance(obj):
                    self.on_change(_key(obj)[0], _instance(obj))

    def store(self, obj: dict[str, Any]) -> None:
        """Keep `obj` unless a newer version is already here (writes store their answers too). Its
        managedFields are dropped (as client-go's informers are usually told to): nothing reads them, and they
        are the larger part of a Deployment."""
        obj = slim(obj)
        key = _key(obj)
        if not newer_or_same(obj, self.objects.get(key)):
            return
        self.forget(*key)
        self.objects[key] = obj
        self.by_instance.setdefault((key[0], _instance(obj)), set()).add(key[1])

    def forget(self, namespace: str, name: str) -> None:
        obj = self.objects.pop((namespace, name), None)
        if obj is not None:
            names = self.by_instance.get((namespace, _instance(obj)))
            if names is not None:
                names.discard(name)
                if not names:
                    del self.by_instance[(namespace, _instance(obj))]

    def freshest(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj`, or the cached version of it if that is newer."""
        cached = self.objects.get(_key(obj))
        return cached if cached is not None and newer_or_same(cached, obj) else obj

    def of_instance(self, namespace: str, instance: str) -> list[dict[str, Any]]:
        return [self.objects[(namespace, n)] for n in self.by_instance.get((namespace, instance), ())]


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without metadata.managedFields and the last-applied annotation."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if "managedFields" not in meta and "kubectl.kubernetes.io/last-applied-configuration" not in annotations:
        return obj
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return {**obj, "metadata": meta}


def _instance(obj: dict[str, Any]) -> str:
    return (obj.get("metadata", {}).get("labels") or {}).get(NAME_LABEL, "")


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


class MultiScope:
    """One kind over several namespaces (one reflector each), read as one."""

    def __init__(self, reflectors: list[Reflector]) -> None:
        self.reflectors = reflectors

    @property
    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {key: obj for r in self.reflectors for key, obj in r.objects.items()}

    def _for(self, namespace: str) -> Reflector:
        return next((r for r in self.reflectors if r.namespace in (None, namespace)), self.reflectors[0])

    def store(self, obj: dict[str, Any]) -> None:
        self._for(obj["metadata"].get("namespace", "")).store(obj)

    def freshest(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._for(obj["metadata"].get("namespace", "")).freshest(obj)


class ChildCache:
    """Every GPTDeployment (`owners`) and every child of one in scope, from one reflector per kind and
    namespace (cluster-wide: one per kind)."""

    def __init__(
        self,
        client: KubeClient,
        kinds: dict[str, tuple[str, str]],
        namespaces: Iterable[str] = (),
        optional: Iterable[str] = (),
        owners: tuple[str, str] | None = None,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        scopes: list[str | None] = list(namespaces) or [None]
        optional = set(optional)
        self.reflectors: dict[tuple[str, str | None], Reflector] = {
            (kind, ns): Reflector(client, kind, api_version, plural, ns, optional=kind in optional, on_change=on_change)
            for kind, (api_version, plural) in kinds.items()
            for ns in scopes
        }
        owner_reflectors = []
        if owners is not None:
            for ns in scopes:
                reflector = Reflector(client, "owner", owners[0], owners[1], ns, selector="")
                self.reflectors[("owner", ns)] = reflector
                owner_reflectors.append(reflector)
        self.owners = MultiScope(owner_reflectors)
        self.kinds = kinds
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(r.run(), name=f"reflector {k}") for k, r in self.reflectors.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def wait_synced(self, timeout_s: float | None = None) -> None:
        async with asyncio.timeout(timeout_s):
            for reflector in self.reflectors.values():
                await reflector.synced.wait()

    def _reflector(self, kind: str, namespace: str) -> Reflector:
        return self.reflectors.get((kind, namespace)) or self.reflectors[(kind, None)]

    def children(self, namespace: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The live children of GPTDeployment namespace/name, by (kind, name)."""
        return {
            (kind, obj["metadata"]["name"]): obj
            for kind in self.kinds
            for obj in self._reflector(kind, namespace).of_instance(namespace, name)
        }

    def available(self, kind: str, namespace: str) -> bool:
        return self._reflector(kind, namespace).available

    def store(self, kind: str, obj: dict[str, Any]) -> None:
        self._reflector(kind, obj["metadata"].get("namespace", "")).store(obj)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._reflector(kind, namespace).forget(namespace, name)

    @property
    def lists(self) -> int:
        return sum(r.lists for r in self.reflectors.values())
