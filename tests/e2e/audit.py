"""The local API server's audit log (hack/k8s/audit-policy.yaml), read back: who asked for what, and when."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from typing import Any

from .kube import OPERATOR_NAMESPACE

OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:gpt-operator"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def log_path() -> str:
    path = os.environ.get("GPT_E2E_AUDIT_LOG")
    assert path, "GPT_E2E_AUDIT_LOG is not set: the cluster must keep an audit log (cluster.sh and kind-e2e.sh do)"
    return path


def events(since: datetime, until: datetime, user: str | None = OPERATOR_SA) -> list[dict[str, Any]]:
    """The audit events of `user`'s requests (everyone's: None) received in [since, until)."""
    out = []
    with open(log_path()) as log:
        for line in log:
            event = json.loads(line)
            if user is not None and event.get("user", {}).get("username") != user:
                continue
            received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since <= received < until:
                out.append(event)
    return out


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{event['verb']} {ref.get('resource')}{sub} {ref.get('namespace', '')}/{ref.get('name', '')}"


def writes(found: list[dict[str, Any]], *, leases: bool = False) -> Counter[str]:
    """Write requests by description; Lease renewals (leader election's heartbeat) only when asked."""
    return Counter(
        describe(e)
        for e in found
        if e["verb"] in WRITE_VERBS and (leases or (e.get("objectRef") or {}).get("resource") != "leases")
    )


def reads(found: list[dict[str, Any]], verb: str) -> Counter[str]:
    return Counter(describe(e) for e in found if e["verb"] == verb)
