"""The pure parts of apply.py and settings: change detection, owner references, status patches."""

from __future__ import annotations

import pytest
from gpt_operator.apply import _path, is_subset, status_changes, with_owner
from gpt_operator.schema import structural_problems
from gpt_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def test_live_object_with_server_defaults_counts_as_unchanged() -> None:
    wanted = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "runtime", "image": "i"}]}}}}
    live = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "runtime", "image": "i", "terminationMessagePath": "/x"}]}},
        },
        "status": {"readyReplicas": 2},
    }
    assert is_subset(wanted, live)


@pytest.mark.parametrize(
    "live",
    [
        {"spec": {"replicas": 3}},  # a value differs
        {"spec": {}},  # a field is missing
        {"spec": {"replicas": 2, "ports": [1]}},  # a list differs in length
    ],
)
def test_changed_fields_are_detected(live: dict) -> None:
    wanted = {"spec": {"replicas": 2, "ports": [1, 2]}}
    assert not is_subset(wanted, live)


def test_owner_reference_is_a_controller_reference() -> None:
    owner = {"metadata": {"name": "chat", "uid": "u-1"}}
    obj = with_owner({"kind": "Service", "metadata": {"name": "chat", "labels": {"a": "b"}}}, owner)
    assert obj["metadata"]["labels"] == {"a": "b"}
    assert obj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "serving.gpt-operator.dev/v1alpha1",
            "kind": "GPTDeployment",
            "name": "chat",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_status_patch_has_only_changes_and_removals() -> None:
    previous = {"phase": "Available", "ready": "1/1", "canaryWeight": 20}
    wanted = {"phase": "Available", "ready": "2/2", "canaryWeight": None, "currentStep": None}
    assert status_changes(previous, wanted) == {"ready": "2/2", "canaryWeight": None}
    assert status_changes(wanted | {"ready": "2/2"}, wanted) == {}


@pytest.mark.parametrize(
    ("api_version", "plural", "namespace", "name", "path"),
    [
        ("v1", "services", "ml", "chat", "/api/v1/namespaces/ml/services/chat"),
        ("apps/v1", "deployments", "ml", None, "/apis/apps/v1/namespaces/ml/deployments"),
        (
            "autoscaling/v2",
            "horizontalpodautoscalers",
            "ml",
            "x",
            "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/x",
        ),
    ],
)
def test_api_paths(api_version: str, plural: str, namespace: str, name: str | None, path: str) -> None:
    assert _path(api_version, plural, namespace, name) == path


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_OPERATOR_NAMESPACES", "ml, ml-staging ,")
    monkeypatch.setenv("GPT_OPERATOR_RESYNC_SECONDS", "30")
    settings = OperatorSettings()
    assert settings.namespace_list == ["ml", "ml-staging"]
    assert settings.resync_seconds == 30
    assert OperatorSettings(namespaces="").namespace_list == []


def test_structural_check_flags_untyped_and_unknown_keywords() -> None:
    schema = {"type": "object", "properties": {"a": {"description": "no type"}, "b": {"type": "string", "oneOf": []}}}
    problems = structural_problems(schema)
    assert ".a: no type" in problems
    assert any(".b: unsupported keywords ['oneOf']" in p for p in problems)
