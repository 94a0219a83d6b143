"""The pure parts of apply.py and settings: change detection, the sync plan, owner references, status patches;
kube_apply.ensure_jwt_secret against a fake API."""

from __future__ import annotations

import asyncio
import base64

import kubernetes_validate
import pytest
from gpt_operator.apply import (
    CHILD_KINDS,
    SecretsSeen,
    is_applied,
    is_subset,
    jwt_secret,
    owned_by,
    plan_sync,
    quantity,
    secret_seen_key,
    with_owner,
)
from gpt_operator.kube import ApiError, KubeClient, resource_path
from gpt_operator.kube_apply import ensure_jwt_secret
from gpt_operator.naming import ENGINE_KEY_SECRET
from gpt_operator.schema import structural_problems
from gpt_operator.settings import OperatorSettings
from gpt_operator.status import status_changes
from kubernetes_asyncio.client import Configuration

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


def test_list_items_without_apiversion_and_kind_count_as_applied() -> None:
    """The bug behind 553 PATCHes in 3 idle minutes: list items carry no apiVersion/kind, rendered children do."""
    wanted = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat"}, "spec": {"type": "ClusterIP"}}
    listed = {"metadata": {"name": "chat", "uid": "u"}, "spec": {"type": "ClusterIP", "clusterIP": "198.19.0.9"}}
    assert not is_subset(wanted, listed)  # what the operator compared before
    assert is_applied(wanted, listed)
    assert not is_applied(wanted, {**listed, "spec": {"type": "NodePort"}})
    assert not is_applied(wanted, None)


@pytest.mark.parametrize(
    ("wanted", "stored"),
    [("0.5", "500m"), ("2048Mi", "2Gi"), ("1", "1"), (1, "1"), ("1000m", "1"), ("1e3", "1k"), ("100M", "1e8")],
)
def test_quantities_compare_in_canonical_form(wanted, stored) -> None:
    container = {"resources": {"limits": {"cpu": wanted}, "requests": {"memory": wanted}}}
    live = {"resources": {"limits": {"cpu": stored}, "requests": {"memory": stored}}}
    assert is_subset(container, live)
    assert is_subset({"emptyDir": {"sizeLimit": wanted}}, {"emptyDir": {"sizeLimit": stored}})


def test_quantities_that_differ_are_changes_and_other_strings_are_not_quantities() -> None:
    assert not is_subset({"resources": {"limits": {"cpu": "0.5"}}}, {"resources": {"limits": {"cpu": "1"}}})
    # an env value "1000" is a string, not a quantity: "1e3" is a change there
    assert not is_subset({"env": [{"name": "N", "value": "1000"}]}, {"env": [{"name": "N", "value": "1e3"}]})
    assert quantity("2Gi") == 2 * 1024**3 and quantity("500m") == quantity("0.5")
    assert quantity("abc") is None and quantity(True) is None and quantity("5 Gi") is None


def test_empty_wanted_fields_match_their_absence_as_the_server_drops_them() -> None:
    wanted = {"spec": {"tolerations": [], "nodeSelector": {}, "volumeMounts": [{"name": "m", "readOnly": False}]}}
    assert is_subset(wanted, {"spec": {"volumeMounts": [{"name": "m"}]}})
    assert not is_subset({"spec": {"tolerations": [{"key": "k"}]}}, {"spec": {}})


OWNER = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}


def _child(kind: str, name: str, owner_uid: str | None = None, **spec: object) -> dict:
    meta: dict = {"name": name}
    if owner_uid is not None:
        meta["ownerReferences"] = [{"uid": owner_uid}]
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": dict(spec)}


def test_sync_plan_applies_what_differs_keeps_what_is_live_and_prunes_only_our_leftovers() -> None:
    desired = [_child("ConfigMap", "a", x=1), _child("Service", "b", x=1), _child("Deployment", "c", x=1)]
    live = {
        ("Service", "b"): with_owner(_child("Service", "b", x=1), OWNER),  # already as wanted
        ("Deployment", "c"): with_owner(_child("Deployment", "c", x=2), OWNER),  # differs
        ("Service", "old"): _child("Service", "old", "u-1"),  # ours, no longer desired
        ("Service", "theirs"): _child("Service", "theirs", "u-2"),  # another owner's
        ("ConfigMap", "orphan"): _child("ConfigMap", "orphan"),  # no owner
    }
    plan = plan_sync(OWNER, desired, live)
    assert [(o["kind"], o["metadata"]["name"]) for o in plan.apply] == [("ConfigMap", "a"), ("Deployment", "c")]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in plan.apply)
    assert plan.unchanged == ["Service/b"]
    assert plan.prune == [("Service", "old")]
    assert "ownerReferences" not in desired[0]["metadata"]  # the rendered objects are left as they are


def test_sync_plan_of_a_steady_state_makes_no_calls() -> None:
    desired = [_child("Service", "b", x=1)]
    live = with_owner(_child("Service", "b", x=1, clusterIP="10.0.0.1"), OWNER)  # server defaults added
    plan = plan_sync(OWNER, desired, {("Service", "b"): live})
    assert (plan.apply, plan.prune, plan.unchanged) == ([], [], ["Service/b"])


def test_ownership_is_by_uid() -> None:
    assert owned_by(_child("Service", "s", "u-1"), OWNER)
    assert not owned_by(_child("Service", "s", "u-2"), OWNER)
    assert not owned_by(_child("Service", "s"), OWNER)


def test_a_generated_secret_is_remembered_per_namespace_name_and_owner_uid() -> None:
    assert secret_seen_key(OWNER, ENGINE_KEY_SECRET) == ("ml", "chat-engine-key", "u-1")
    assert secret_seen_key({"metadata": {"name": "chat", "namespace": "ml"}}, ENGINE_KEY_SECRET)[2] == ""


def test_secret_existence_is_looked_at_once_per_ttl_unless_asked() -> None:
    client = FakeSecrets(200)
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    seen = SecretsSeen(ttl_s=60)
    for _ in range(5):
        asyncio.run(ensure_jwt_secret(client, owner, seen))
    assert len(client.calls) == 1
    asyncio.run(ensure_jwt_secret(client, owner, seen, look=True))
    assert len(client.calls) == 2
    asyncio.run(ensure_jwt_secret(client, owner, SecretsSeen(ttl_s=0)))
    assert len(client.calls) == 3


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


def test_jwt_secret_is_owned_labelled_and_holds_the_key() -> None:
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    secret = jwt_secret(owner, "k3y")
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
    meta = secret["metadata"]
    assert (meta["name"], meta["namespace"]) == ("chat-jwt", "ml")
    assert meta["labels"]["serving.gpt-operator.dev/name"] == "chat"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "gpt-operator"
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"] is True
    assert base64.b64decode(secret["data"]["GPT_JWT_SECRET"]) == b"k3y"
    assert "Secret" not in CHILD_KINDS  # so prune never lists or deletes it


class FakeSecrets(KubeClient):
    """Answers GET and POST of secrets as the API server would, recording what was sent."""

    def __init__(self, get_status: int, post_status: int = 201) -> None:
        configuration = Configuration()
        configuration.host = "http://unused"
        super().__init__(configuration, field_manager="gpt-operator")
        self.get_status, self.post_status = get_status, post_status
        self.calls: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, **kwargs: object) -> dict:
        self.calls.append((method, path))
        status = self.get_status if method == "GET" else self.post_status
        if status >= 400:
            raise ApiError(status, "refused")
        return {}


@pytest.mark.parametrize(
    ("get_status", "post_status", "created", "calls"),
    [
        (200, 201, False, ["GET /api/v1/namespaces/ml/secrets/chat-jwt"]),
        (404, 201, True, ["GET /api/v1/namespaces/ml/secrets/chat-jwt", "POST /api/v1/namespaces/ml/secrets"]),
        # another writer created it between our GET and POST: theirs stays
        (404, 409, False, ["GET /api/v1/namespaces/ml/secrets/chat-jwt", "POST /api/v1/namespaces/ml/secrets"]),
    ],
)
def test_jwt_secret_is_created_only_when_missing(get_status: int, post_status: int, created: bool, calls) -> None:
    client = FakeSecrets(get_status, post_status)
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    assert asyncio.run(ensure_jwt_secret(client, owner)) is created
    assert [f"{m} {p}" for m, p in client.calls] == calls


@pytest.mark.parametrize(("get_status", "post_status"), [(403, 201), (404, 403)])
def test_jwt_secret_errors_other_than_absent_or_conflict_are_raised(get_status: int, post_status: int) -> None:
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    with pytest.raises(ApiError):
        asyncio.run(ensure_jwt_secret(FakeSecrets(get_status, post_status), owner))


def test_status_patch_has_only_changes_and_removals() -> None:
    previous = {"phase": "Available", "ready": "1/1", "canaryWeight": 20}
    wanted = {"phase": "Available", "ready": "2/2", "canaryWeight": None, "currentStep": None}
    assert status_changes(previous, wanted) == {"ready": "2/2", "canaryWeight": None}
    assert status_changes(wanted | {"ready": "2/2"}, wanted) == {}


def test_status_patch_replaces_nested_maps_key_by_key() -> None:
    previous = {"lastActions": {"serving.gpt-operator.dev/promote": "a"}}
    wanted = {"lastActions": {"serving.gpt-operator.dev/abort": "b"}}
    assert status_changes(previous, wanted) == {
        "lastActions": {"serving.gpt-operator.dev/abort": "b", "serving.gpt-operator.dev/promote": None}
    }
    assert status_changes(previous, {"lastActions": None}) == {"lastActions": None}
    assert status_changes(previous, previous) == {}


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
    assert resource_path(api_version, plural, namespace, name) == path


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
