"""The API calls of syncing children: server-side apply and prune as apply.plan_sync decides, and the generated
Secrets created once (apply.py holds every decision; this module only calls the API and records the answers)."""

from __future__ import annotations

import secrets
from typing import Any

from gpt_operator.apply import (
    CHILD_KINDS,
    OPTIONAL_KINDS,
    ChildKey,
    SecretsSeen,
    SyncResult,
    child_key,
    child_label,
    generated_secret,
    plan_sync,
    secret_seen_key,
)
from gpt_operator.informer import ChildCache
from gpt_operator.kube import ApiError, KubeClient
from gpt_operator.naming import JWT_SECRET, GeneratedSecret


async def sync_children(
    client: KubeClient,
    cache: ChildCache,
    owner: dict[str, Any],
    desired: list[dict[str, Any]],
    live: dict[ChildKey, dict[str, Any]],
) -> SyncResult:
    """Apply what differs from `live` (cache.children), then delete our children no longer desired.
    What the API answers goes into the cache, so the next tick compares with it."""
    namespace = owner["metadata"]["namespace"]
    plan = plan_sync(owner, desired, live)
    result = SyncResult(unchanged=plan.unchanged)
    for obj in plan.apply:
        kind = obj["kind"]
        label = child_label(child_key(obj))
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
    for kind, name in plan.prune:
        api_version, plural = CHILD_KINDS[kind]
        try:
            await client.delete(api_version, plural, namespace, name)
        except ApiError as exc:
            if exc.status != 404:
                raise
        cache.forget(kind, namespace, name)
        result.pruned.append(child_label((kind, name)))
    return result


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
    key = secret_seen_key(owner, secret)
    namespace, name, _ = key
    seen = seen if seen is not None else SecretsSeen()
    if not look and seen.fresh(key):
        return False
    created = False
    if not await client.exists("v1", "secrets", namespace, name):
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
