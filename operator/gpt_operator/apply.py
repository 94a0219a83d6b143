"""Children in, children out: server-side apply of what differs from the cache, prune, the generated Secrets.

Every child is applied with one field manager and `force=true` (the operator owns what it renders), and
only when the live object (from informer.ChildCache) differs from what is wanted, compared as the API server
stores it (no apiVersion/kind on list items, quantities in canonical form, empty fields dropped), so a
steady state makes no writes.

Some children are not rendered: the Secrets of random values the pods share (naming.GeneratedSecret: the JWT
signing key `<name>-jwt`, the engine API key `<name>-engine-key`; ensure_secret). Each is created once with a
random value, never patched, rotated or read, and never pruned (Secret is not in CHILD_KINDS, so nothing here
lists it); the garbage collector deletes it with its GPTDeployment.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gpt_operator.informer import ChildCache
from gpt_operator.kube import ApiError, KubeClient
from gpt_operator.naming import JWT_SECRET, GeneratedSecret, common_labels, owner_reference

JWT_SECRET_KEY = JWT_SECRET.key
JWT_SECRET_BYTES = JWT_SECRET.random_bytes
SECRET_CHECK_TTL_S = 300.0  # how long a seen generated Secret is trusted before it is looked at again

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
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),  # model.cache; pruned after the pods' Deployments
}
OPTIONAL_KINDS = {"ServiceMonitor", "HTTPRoute"}  # their CRDs may be missing in a cluster

__all__ = ["CHILD_KINDS", "OPTIONAL_KINDS", "ApiError", "KubeClient"]

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal("1e3"),
    "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}  # fmt: skip
# Fields whose values the API server stores as canonical quantities ("0.5" comes back as "500m").
_QUANTITY_MAPS = {"limits", "requests", "capacity", "allocatable", "hard"}
_QUANTITY_FIELDS = {"sizeLimit", "averageValue", "storage"}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity's value ('500m' -> 0.5, '2Gi' -> 2147483648), None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        return Decimal(number + (exponent or "")) * _SUFFIX[suffix or ""]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    """Values the API server drops from what it stores (omitempty): wanting one is met by its absence."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def is_subset(wanted: Any, live: Any, *, key: str = "", in_quantities: bool = False) -> bool:
    """Whether every field we want is already live, as the API server stores it: it adds defaults and
    status, drops empty fields, and writes quantities canonically."""
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return live is None and not wanted
        quantities = key in _QUANTITY_MAPS
        return all(
            is_subset(v, live[k], key=k, in_quantities=quantities) if k in live else _empty(v)
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        if live is None:
            return not wanted
        return isinstance(live, list) and len(wanted) == len(live) and all(map(is_subset, wanted, live))
    if wanted == live:
        return True
    if in_quantities or key in _QUANTITY_FIELDS:
        parsed = quantity(wanted)
        return parsed is not None and parsed == quantity(live)
    return False


def is_applied(wanted: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether a rendered child needs no apply: list items carry no apiVersion/kind, so those are not compared."""
    if live is None:
        return False
    return is_subset({k: v for k, v in wanted.items() if k not in ("apiVersion", "kind")}, live)


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


async def sync_children(
    client: KubeClient,
    cache: ChildCache,
    owner: dict[str, Any],
    desired: list[dict[str, Any]],
    live: dict[tuple[str, str], dict[str, Any]],
) -> SyncResult:
    """Apply what differs from `live` (cache.children), then delete our children no longer desired.
    What the API answers goes into the cache, so the next tick compares with it."""
    meta = owner["metadata"]
    namespace = meta["namespace"]
    result = SyncResult()
    wanted_keys = set()
    for obj in desired:
        obj = with_owner(obj, owner)
        kind = obj["kind"]
        key = (kind, obj["metadata"]["name"])
        wanted_keys.add(key)
        label = f"{key[0]}/{key[1]}"
        if is_applied(obj, live.get(key)):
            result.unchanged.append(label)
            continue
        if kind in OPTIONAL_KINDS and not cache.available(kind, namespace):
            result.skipped.append(label)
            continue
        api_version, plural = CHILD_KINDS[kind]
        try:
            cache.store(kind, await client.apply(obj, api_version, plural))
        except ApiError as exc:
            if exc.status == 404 and kind in OPTIONAL_KINDS:
                result.skipped.append(label)
                continue
            raise
        result.applied.append(label)
    for key, obj in live.items():
        owners = obj["metadata"].get("ownerReferences") or []
        ours = any(ref.get("uid") == meta.get("uid") for ref in owners)
        if key not in wanted_keys and ours:
            api_version, plural = CHILD_KINDS[key[0]]
            try:
                await client.delete(api_version, plural, namespace, key[1])
            except ApiError as exc:
                if exc.status != 404:
                    raise
            cache.forget(key[0], namespace, key[1])
            result.pruned.append(f"{key[0]}/{key[1]}")
    return result


def generated_secret(owner: dict[str, Any], secret: GeneratedSecret, value: str) -> dict[str, Any]:
    """A generated Secret (`<name>-<suffix>`, one key) of the GPTDeployment, owned by it."""
    meta = owner["metadata"]
    encoded = base64.b64encode(value.encode()).decode()
    obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret.name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": common_labels(meta["name"]),
        },
        "type": "Opaque",
        "data": {secret.key: encoded},
    }
    return with_owner(obj, owner)


def jwt_secret(owner: dict[str, Any], value: str) -> dict[str, Any]:
    """The Secret of the runtime pods' shared JWT signing key, owned by the GPTDeployment."""
    return generated_secret(owner, JWT_SECRET, value)


@dataclass
class SecretsSeen:
    """Generated Secrets known to exist, by (namespace, Secret name, owner uid), with when they were seen:
    the existence check is one GET per Secret per SECRET_CHECK_TTL_S, not one per resync."""

    ttl_s: float = SECRET_CHECK_TTL_S
    seen: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def fresh(self, key: tuple[str, str, str]) -> bool:
        at = self.seen.get(key)
        return at is not None and time.monotonic() - at < self.ttl_s

    def mark(self, key: tuple[str, str, str]) -> None:
        self.seen[key] = time.monotonic()


async def ensure_secret(
    client: KubeClient,
    owner: dict[str, Any],
    secret: GeneratedSecret,
    seen: SecretsSeen | None = None,
    *,
    look: bool = False,
) -> bool:
    """Create the generated Secret with a fresh random value if it is missing; True if this call created it.

    `seen` remembers Secrets found, so a resync looks again only after its TTL; `look` looks now anyway.
    An existing Secret is left exactly as it is (never patched, overwritten or rotated), whoever made it;
    a 409 means another writer created it meanwhile. The value is never logged or returned, and only the
    Secret's existence is asked for (GET), never its data through a list or watch.
    """
    meta = owner["metadata"]
    name = secret.name(meta["name"])
    key = (meta["namespace"], name, meta.get("uid", ""))
    seen = seen if seen is not None else SecretsSeen()
    if not look and seen.fresh(key):
        return False
    created = False
    if not await client.exists("v1", "secrets", meta["namespace"], name):
        obj = generated_secret(owner, secret, secrets.token_urlsafe(secret.random_bytes))
        try:
            await client.create(obj, "v1", "secrets")
            created = True
        except ApiError as exc:
            if exc.status != 409:
                raise
    seen.mark(key)
    return created


async def ensure_jwt_secret(
    client: KubeClient, owner: dict[str, Any], seen: SecretsSeen | None = None, *, look: bool = False
) -> bool:
    """ensure_secret for `<name>-jwt`, the runtime pods' shared JWT signing key."""
    return await ensure_secret(client, owner, JWT_SECRET, seen, look=look)


def status_changes(previous: dict[str, Any] | None, wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning the live status into the wanted one: changed keys, None for
    removed ones, nested maps patched key by key (a merge patch merges maps, so stale keys need a None)."""
    previous = previous or {}
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        old = previous.get(key)
        if value is None:
            if old is not None:
                patch[key] = None
        elif isinstance(value, dict) and isinstance(old, dict):
            nested = status_changes(old, value) | {k: None for k in old if k not in value}
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    return patch
