"""Kubernetes Events about a GPTDeployment (core/v1, as `kubectl describe` shows them).

Posted by the operator's own client, from change handlers and from the resync task alike. A failure to post
is logged and never fails a reconcile: events are a report, not state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from gpt_operator.kube import ApiError, KubeClient

log = logging.getLogger(__name__)
COMPONENT = "gpt-operator"
MAX_MESSAGE = 1024  # the API server refuses longer event messages


def event_body(owner: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about `owner` (pure)."""
    meta = owner["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post(client: KubeClient, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post one Event; errors are logged, not raised."""
    body = event_body(owner, type_, reason, message, datetime.now(UTC))
    try:
        await client.create(body, "v1", "events")
    except ApiError as exc:
        log.warning(f"could not post event {reason} for {owner['metadata'].get('name')}: {exc}")
