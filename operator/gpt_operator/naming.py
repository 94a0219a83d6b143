"""Names, labels, selectors and owner references of everything the operator creates.

Children carry explicit labels (never a copy of the owner's labels: that would spread Argo CD's tracking
label `app.kubernetes.io/instance` to objects Argo CD did not create).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt_operator.spec import API_VERSION, GROUP, KIND

FIELD_MANAGER = "gpt-operator"
NAME_LABEL = f"{GROUP}/name"
TRACK_LABEL = f"{GROUP}/track"
REVISION_LABEL = f"{GROUP}/revision"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gpt-operator"

# Annotations a user sets on the GPTDeployment (kubectl annotate; GitOps manifests stay untouched).
PROMOTE_ANNOTATION = f"{GROUP}/promote"  # one-shot: "true" (next step) or "full"
ABORT_ANNOTATION = f"{GROUP}/abort"  # one-shot
RETRY_ANNOTATION = f"{GROUP}/retry"  # one-shot: run the aborted revision again from the start
PAUSED_ANNOTATION = f"{GROUP}/paused"  # "true" while paused; remove it to resume
WAKE_UNTIL_ANNOTATION = f"{GROUP}/wake-until"  # RFC 3339 time
ONE_SHOT_ANNOTATIONS = (PROMOTE_ANNOTATION, ABORT_ANNOTATION, RETRY_ANNOTATION)

# Annotations the operator sets on its children.
TEMPLATE_ANNOTATION = f"{GROUP}/template-spec"  # the pod-deciding spec a track was rendered from

TRACK_MAIN = "main"
TRACK_BLUE = "blue"
TRACK_GREEN = "green"
TRACK_STABLE = "stable"
TRACK_CANARY = "canary"


def other_colour(colour: str) -> str:
    return TRACK_GREEN if colour == TRACK_BLUE else TRACK_BLUE


def track_deployment_name(name: str, track: str) -> str:
    """`<name>` for a rolling update's single track, `<name>-<track>` otherwise."""
    return name if track == TRACK_MAIN else f"{name}-{track}"


def config_map_name(name: str, revision: str) -> str:
    return f"{name}-config-{revision}"


def preview_service_name(name: str) -> str:
    return f"{name}-preview"


@dataclass(frozen=True)
class GeneratedSecret:
    """A Secret `<name>-<suffix>` the operator creates once with a random value under `key` (kube_apply.ensure_secret),
    never rewrites, never reads back, and leaves to the garbage collector."""

    suffix: str
    key: str
    what: str  # for the log line, never the value
    random_bytes: int = 48

    def name(self, owner: str) -> str:
        return f"{owner}-{self.suffix}"


# The runtime pods' shared JWT signing key (every pod's envFrom).
JWT_SECRET = GeneratedSecret("jwt", "GPT_JWT_SECRET", "a new JWT signing key")
# The API key between the runtime and its engine container (spec.engine other than builtin): the engine requires
# it (it listens on 0.0.0.0 for the kubelet's probes), the runtime sends it.
ENGINE_KEY_SECRET = GeneratedSecret("engine-key", "api-key", "a new engine API key")


def jwt_secret_name(name: str) -> str:
    """The Secret holding GPT_JWT_SECRET, shared by every pod of one GPTDeployment (kube_apply.ensure_secret)."""
    return JWT_SECRET.name(name)


def engine_key_secret_name(name: str) -> str:
    """The Secret holding the engine's API key (key `api-key`), for GPTDeployments with an engine container."""
    return ENGINE_KEY_SECRET.name(name)


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gpt-runtime",
        "app.kubernetes.io/component": "model-server",
        MANAGED_BY_LABEL: MANAGED_BY,
        NAME_LABEL: name,
    }


def instance_selector(name: str) -> dict[str, str]:
    """Selects every pod of one GPTDeployment, all tracks."""
    return {NAME_LABEL: name}


def track_selector(name: str, track: str) -> dict[str, str]:
    return {NAME_LABEL: name, TRACK_LABEL: track}


def selector_string(selector: dict[str, str]) -> str:
    """The label selector as `kubectl get -l` and the scale subresource write it."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def children_selector(name: str) -> str:
    """What kube_apply.py lists to find (and prune) this GPTDeployment's children."""
    return selector_string({MANAGED_BY_LABEL: MANAGED_BY, NAME_LABEL: name})


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
