"""Real-cluster pod options (service account, pull secrets, priority, labels, annotations, volumes, spread) and
the stop budget (grace period, drain, PDB for staging on spot): rendering, and rejection by spec.py and the CRD."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gpt_operator.render import render_children
from gpt_operator.render.workload import PRESTOP_SLEEP_SECONDS, deployment
from gpt_operator.rollout import Plan, RolloutState, TrackPlan
from gpt_operator.schema import crd_version_schema, validation_problems
from gpt_operator.spec import RESERVED_VOLUME_NAMES, parse_spec
from pydantic import ValidationError

pytestmark = pytest.mark.unit
K8S = kubernetes_validate.latest_version()
ROOT = Path(__file__).resolve().parents[3]
SCHEMA = crd_version_schema(yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text()), "v1alpha1")
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
SOURCE = {"source": "builtin:tiny"}

FULL = {
    "model": SOURCE,
    "serviceAccountName": "gpt-runtime",
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "inference-high",
    "podLabels": {"team": "ml", "app.kubernetes.io/name": "mine"},
    "podAnnotations": {"prometheus.io/scrape": "false", "example.com/owner": "ml-team"},
    "volumes": [
        {"name": "certs", "secret": {"secretName": "corp-ca"}},
        {"name": "prompts", "configMap": {"name": "prompts"}},
    ],
    "volumeMounts": [
        {"name": "certs", "mountPath": "/etc/ssl/corp", "readOnly": True},
        {"name": "prompts", "mountPath": "/prompts"},
    ],
    "capacity": {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ]
    },
    "terminationGracePeriodSeconds": 300,
}


def pod_of(fields: dict, track: str = "main") -> dict:
    spec = parse_spec(fields)
    return deployment("demo", "ml", track, spec.pod_template_spec(), spec.revision, 1)["spec"]["template"]


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_every_pod_option_is_rendered_and_the_deployment_is_valid() -> None:
    spec = parse_spec(FULL)
    dep = deployment("demo", "ml", "main", spec.pod_template_spec(), spec.revision, 1)
    kubernetes_validate.validate(dep, K8S, strict=True)
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpt-runtime"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["priorityClassName"] == "inference-high"
    assert pod["terminationGracePeriodSeconds"] == 300


def test_options_travel_in_the_template_so_every_track_gets_them() -> None:
    """The Deployment of a track is rendered from the template recorded on it (blue/green, canary)."""
    for track in ("blue", "canary"):
        pod = pod_of(FULL, track)
        assert pod["spec"]["serviceAccountName"] == "gpt-runtime"
        assert [v["name"] for v in pod["spec"]["volumes"]][-2:] == ["certs", "prompts"]


def test_unset_options_render_nothing_and_keep_the_revision() -> None:
    """A spec without the new fields has the same template (and revision) as before they existed."""
    spec = parse_spec({"model": SOURCE})
    original = {"environment", "model", "resources", "image", "imagePullPolicy", "env", "secretRef", "capacity"}
    assert set(spec.pod_template_spec()) == original
    assert spec.revision == parse_spec({"model": SOURCE, "volumes": [], "podLabels": {}}).revision
    pod = pod_of({"model": SOURCE})["spec"]
    for key in ("serviceAccountName", "imagePullSecrets", "priorityClassName"):
        assert key not in pod
    assert parse_spec(FULL).revision != spec.revision  # a pod option is a new revision, rolled out like any


def test_pod_labels_are_added_but_never_replace_the_operators() -> None:
    labels = pod_of(FULL)["metadata"]["labels"]
    assert labels["team"] == "ml"
    assert labels["app.kubernetes.io/name"] == "gpt-runtime"  # ours wins
    assert labels["serving.gpt-operator.dev/name"] == "demo"
    assert labels["serving.gpt-operator.dev/track"] == "main"


def test_pod_annotations_may_replace_the_prometheus_ones() -> None:
    annotations = pod_of(FULL)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["example.com/owner"] == "ml-team"


def test_extra_volumes_and_mounts_follow_the_operators_own() -> None:
    pod = pod_of({**FULL, "model": {"source": "pvc:models/gpt2"}})["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["data", "tmp", "model", "certs", "prompts"]
    assert pod["volumes"][3] == {"name": "certs", "secret": {"secretName": "corp-ca"}}
    mounts = pod["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/data", "/tmp", "/models/models", "/etc/ssl/corp", "/prompts"]
    assert mounts[3] == {"name": "certs", "mountPath": "/etc/ssl/corp", "readOnly": True}


def test_reserved_volume_names_cover_every_volume_the_operator_renders() -> None:
    """A new operator volume must be reserved in spec.py (and the CRD's rule), or a user's could collide."""
    pod = pod_of({"model": {"source": "pvc:models/gpt2"}})["spec"]
    for volume in pod["volumes"]:
        assert volume["name"] in RESERVED_VOLUME_NAMES or volume["name"].startswith("gpt-")
    rule = SPEC_SCHEMA["properties"]["volumes"]["items"]["x-kubernetes-validations"][0]["rule"]
    for name in RESERVED_VOLUME_NAMES:
        assert f"'{name}'" in rule


def test_user_topology_spread_replaces_the_default_and_selects_its_track() -> None:
    spread = pod_of(FULL, "canary")["spec"]["topologySpreadConstraints"]
    assert spread == [
        {
            "labelSelector": {
                "matchLabels": {"serving.gpt-operator.dev/name": "demo", "serving.gpt-operator.dev/track": "canary"}
            },
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ]
    own = {"matchLabels": {"team": "ml"}}
    constraint = {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": own}
    spread = pod_of({"model": SOURCE, "capacity": {"topologySpreadConstraints": [constraint]}})["spec"]
    assert spread["topologySpreadConstraints"][0]["labelSelector"] == own
    default = pod_of({"model": SOURCE})["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in default] == ["topology.kubernetes.io/zone"]


@pytest.mark.parametrize(
    ("fields", "grace"),
    [
        ({"environment": "dev"}, 90),  # spot
        ({"environment": "staging", "capacity": {"type": "spot-with-fallback"}}, 90),
        ({"environment": "prod"}, 60),  # on-demand
        ({"environment": "prod", "terminationGracePeriodSeconds": 180}, 180),
    ],
)
def test_grace_period_and_the_runtimes_drain_budget_fit_together(fields: dict, grace: int) -> None:
    """preStop sleep + the runtime's drain (GPT_SHUTDOWN_TIMEOUT_S) + a margin fit in the grace period."""
    pod = pod_of({"model": SOURCE, **fields})
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace
    drain = int(env_of(pod)["GPT_SHUTDOWN_TIMEOUT_S"])
    lifecycle = pod["spec"]["containers"][0]["lifecycle"]
    assert lifecycle["preStop"]["sleep"]["seconds"] == PRESTOP_SLEEP_SECONDS
    assert PRESTOP_SLEEP_SECONDS + drain < grace
    assert drain >= grace - PRESTOP_SLEEP_SECONDS - 5


def test_user_env_may_set_its_own_drain_budget() -> None:
    env = pod_of({"model": SOURCE, "env": [{"name": "GPT_SHUTDOWN_TIMEOUT_S", "value": "20"}]})["spec"]
    values = [e for e in env["containers"][0]["env"] if e["name"] == "GPT_SHUTDOWN_TIMEOUT_S"]
    assert values == [{"name": "GPT_SHUTDOWN_TIMEOUT_S", "value": "20"}]


def _kinds(fields: dict) -> list[str]:
    spec = parse_spec({"model": SOURCE, **fields})
    plan = Plan(
        tracks=[TrackPlan("main", spec.revision, spec.pod_template_spec(), 1)],
        services={"": None},
        state=RolloutState(),
    )
    return [o["kind"] for o in render_children("demo", "ml", spec, plan, asleep=False)]


@pytest.mark.parametrize(
    ("fields", "pdb"),
    [
        ({"environment": "staging"}, True),  # spot by default
        ({"environment": "staging", "capacity": {"type": "spot-with-fallback"}}, True),
        ({"environment": "staging", "capacity": {"type": "on-demand"}}, False),
        ({"environment": "prod"}, True),
        ({"environment": "dev"}, False),
        ({"environment": "test"}, False),
    ],
)
def test_staging_spot_pods_get_a_pdb_too(fields: dict, pdb: bool) -> None:
    assert ("PodDisruptionBudget" in _kinds(fields)) is pdb


BAD: list[tuple[str, dict, str]] = [
    ("reserved-label", {"podLabels": {"serving.gpt-operator.dev/track": "x"}}, "operator's own"),
    ("bad-label-value", {"podLabels": {"team": "not ok!"}}, "not a valid label value"),
    ("bad-label-key", {"podLabels": {"-bad": "x"}}, "not a valid Kubernetes label"),
    ("reserved-annotation", {"podAnnotations": {"serving.gpt-operator.dev/x": "y"}}, "operator's own"),
    ("reserved-volume", {"volumes": [{"name": "data", "emptyDir": {}}]}, "operator's"),
    ("prefixed-volume", {"volumes": [{"name": "gpt-cache", "emptyDir": {}}]}, "operator's"),
    ("no-source", {"volumes": [{"name": "x"}]}, "exactly one volume source"),
    ("two-sources", {"volumes": [{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "exactly one"),
    ("dangling-mount", {"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, "spec.volumes lacks: x"),
    (
        "mount-over-data",
        {"volumes": [{"name": "x", "emptyDir": {}}], "volumeMounts": [{"name": "x", "mountPath": "/data"}]},
        "the runtime's own",
    ),
    ("short-grace", {"terminationGracePeriodSeconds": 5}, "greater than or equal to 15"),
    ("bad-service-account", {"serviceAccountName": "Not_A_Name"}, "should match pattern"),
]


@pytest.mark.parametrize(("name", "fields", "message"), BAD, ids=[b[0] for b in BAD])
def test_spec_refuses_bad_pod_options(name: str, fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_spec({"model": SOURCE, **fields})


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"podLabels": {"team": "not ok!"}}, ".spec.podLabels.team"),
        ({"podLabels": {f"k{i}": "v" for i in range(65)}}, "more than 64 properties"),
        ({"serviceAccountName": "Not_A_Name"}, ".spec.serviceAccountName"),
        ({"priorityClassName": "UPPER"}, ".spec.priorityClassName"),
        ({"imagePullSecrets": [{}]}, ".spec.imagePullSecrets[0]: name is required"),
        ({"volumes": [{"name": "Bad_Name", "emptyDir": {}}]}, ".spec.volumes[0].name"),
        ({"volumeMounts": [{"name": "x", "mountPath": "relative"}]}, ".spec.volumeMounts[0].mountPath"),
        ({"terminationGracePeriodSeconds": 5}, "below the minimum 15"),
        (
            {"capacity": {"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "z"}]}},
            "whenUnsatisfiable is required",
        ),
        (
            {
                "capacity": {
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "No"}]
                }
            },
            "not one of",
        ),
    ],
)
def test_crd_schema_refuses_bad_pod_options(fields: dict, fragment: str) -> None:
    problems = validation_problems({"spec": {"model": SOURCE, **fields}}, SCHEMA)
    assert any(fragment in p for p in problems), problems


def test_crd_schema_accepts_every_pod_option_and_agrees_with_the_model() -> None:
    assert validation_problems({"spec": FULL}, SCHEMA) == []
    assert parse_spec(FULL).wire()["volumes"][0] == {"name": "certs", "secret": {"secretName": "corp-ca"}}


def test_crd_cel_rules_guard_what_the_schema_cannot() -> None:
    """CEL runs only in the API server (tests/e2e/test_validation.py applies these); here: the rules exist."""
    props = SPEC_SCHEMA["properties"]
    for field in ("podLabels", "podAnnotations"):
        assert "startsWith('serving.gpt-operator.dev/')" in props[field]["x-kubernetes-validations"][0]["rule"]
    assert "'/data'" in props["volumeMounts"]["items"]["x-kubernetes-validations"][0]["rule"]
    assert "self.volumes.exists(v, v.name == m.name)" in SPEC_SCHEMA["x-kubernetes-validations"][0]["rule"]
