"""What to apply, what to prune, the generated Secrets: the pure half of syncing children (no I/O here).

Every child is applied with one field manager and `force=true` (the operator owns what it renders), and
only when the live object (from informer.ChildCache) differs from what is wanted, compared as the API server
stores it (no apiVersion/kind on list items, quantities in canonical form, empty fields dropped), so a
steady state makes no writes. `plan_sync` decides that; kube_apply.py makes the calls.

Some children are not rendered: the Secrets of random values the pods share (naming.GeneratedSecret: the JWT
signing key `<name>-jwt`, the engine API key `<name>-engine-key`; kube_apply.ensure_secret). Each is created once
with a random value, never patched, rotated or read, and never pruned (Secret is not in CHILD_KINDS, so nothing
here lists it); the garbage collector deletes it with its GPTDeployment.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gpt_operator.naming import JWT_SECRET, GeneratedSecret, common_labels, owner_reference

ChildKey = tuple[str, str]  # (kind, name)

JWT_SECRET_KEY = JWT_SECRET.key
JWT_SECRET_BYTES = JWT_SECRET.random_bytes
SECRET_CHECK_TTL_S = 300.0  # how long a seen generated Secret is trusted before it is looked at again

# kind -> (apiVersion, plural); every kind the operator renders, in prune order.
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitors"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Service": ("v1", "services"),
    "Deployment": ("apps/v1", "deployments"),
    "ConfigMap": ("v1", "configmaps"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),  # model.cache; pruned after the pods' Deployments
}
OPTIONAL_KINDS = {"ServiceMonitor", "HTTPRoute", "ScaledObject"}  # their CRDs may be missing in a cluster

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
    """`obj` with `owner` as its only owner reference (a copy; `obj` is left as it is)."""
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner_reference(owner)]}}


def child_key(obj: dict[str, Any]) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def child_label(key: ChildKey) -> str:
    """`Kind/name`, as SyncResult lists children."""
    return f"{key[0]}/{key[1]}"


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether one of `obj`'s owner references names `owner` (by uid)."""
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


@dataclass
class SyncPlan:
    """What a sync does, decided from the desired children and the cache alone: `apply` (owned, in the desired
    order) differ from what is live, `unchanged` need nothing, `prune` are ours and no longer desired."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    prune: list[ChildKey] = field(default_factory=list)


def plan_sync(owner: dict[str, Any], desired: list[dict[str, Any]], live: dict[ChildKey, dict[str, Any]]) -> SyncPlan:
    """Which desired children to apply (those not already live as the server stores them) and which live
    children to delete (owned by `owner`, not desired), in the order the calls are made."""
    plan = SyncPlan()
    wanted_keys = set()
    for obj in desired:
        obj = with_owner(obj, owner)
        key = child_key(obj)
        wanted_keys.add(key)
        if is_applied(obj, live.get(key)):
            plan.unchanged.append(child_label(key))
        else:
            plan.apply.append(obj)
    plan.prune = [key for key, obj in live.items() if key not in wanted_keys and owned_by(obj, owner)]
    return plan


@dataclass
class SyncResult:
    """What a sync did, by `Kind/name`."""

    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # optional kinds whose API is missing

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned)


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
        """Whether `key` was seen less than ttl_s ago."""
        at = self.seen.get(key)
        return at is not None and time.monotonic() - at < self.ttl_s

    def mark(self, key: tuple[str, str, str]) -> None:
        self.seen[key] = time.monotonic()


def secret_seen_key(owner: dict[str, Any], secret: GeneratedSecret) -> tuple[str, str, str]:
    """The SecretsSeen key of `owner`'s generated Secret: (namespace, Secret name, owner uid)."""
    meta = owner["metadata"]
    return meta["namespace"], secret.name(meta["name"]), meta.get("uid", "")
