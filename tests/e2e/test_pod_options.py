"""Pod options, the stop budget and the NetworkPolicy on a real API server.

The local node's CNI (the plain bridge plugin) does not enforce NetworkPolicy: these tests check that the
operator creates, updates and prunes the object and that the API server accepts it, not that traffic is blocked.
"""

from __future__ import annotations

from typing import Any

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest

pytestmark = pytest.mark.e2e


def _spec(**extra: Any) -> dict[str, Any]:
    # staging: spot capacity and no default schedule, so the result does not depend on the hour
    return {"environment": "staging", "model": {"source": "builtin:tiny"}, **extra}


def test_network_policy_is_created_owned_and_pruned_when_disabled(kube: Kube, ns: str) -> None:
    redis = {"to": [{"ipBlock": {"cidr": "198.18.0.0/15"}}], "ports": [{"port": 6379}]}
    kube.apply(gptd_manifest("fenced", ns, _spec(networkPolicy={"enabled": True, "egress": [redis]})))
    policy = kube.eventually(lambda: kube.get("networkpolicy", "fenced", ns), "NetworkPolicy fenced created")
    owner = policy["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("GPTDeployment", "fenced", True)
    assert policy["spec"]["podSelector"] == {"matchLabels": {NAME_LABEL: "fenced"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"ports": [{"port": 6379, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "198.18.0.0/15"}}]} in policy[
        "spec"
    ]["egress"]
    # The policy selects the pods it was written for (not enforced here: the bridge CNI ignores it).
    kube.wait_ready(ns, "fenced", 1)
    assert kube.pods(ns, f"{NAME_LABEL}=fenced")

    kube.patch_merge("gptd", "fenced", ns, {"spec": {"networkPolicy": {"egress": None}}})
    kube.eventually(
        lambda: (kube.get("networkpolicy", "fenced", ns) or {}).get("spec", {}).get("policyTypes") == ["Ingress"],
        "egress rules dropped",
    )
    kube.patch_merge("gptd", "fenced", ns, {"spec": {"networkPolicy": {"enabled": False}}})
    kube.eventually(lambda: kube.get("networkpolicy", "fenced", ns) is None, "NetworkPolicy pruned")


def test_pod_options_reach_the_pods(kube: Kube, ns: str) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "chat-runtime", "namespace": ns},
        }
    )
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra", "namespace": ns}, "data": {"a": "1"}}
    )
    spec = _spec(
        serviceAccountName="chat-runtime",
        podLabels={"team": "ml"},
        podAnnotations={"example.com/owner": "ml"},
        volumes=[{"name": "extra", "configMap": {"name": "extra"}}],
        volumeMounts=[{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
        terminationGracePeriodSeconds=45,
    )
    kube.apply(gptd_manifest("dressed", ns, spec))
    kube.wait_ready(ns, "dressed", 1)
    pod = kube.ready_pods(ns, f"{NAME_LABEL}=dressed")[0]
    assert pod["spec"]["serviceAccountName"] == "chat-runtime"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 45
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "ml"
    container = pod["spec"]["containers"][0]
    assert {"name": "extra", "mountPath": "/etc/extra", "readOnly": True} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPT_SHUTDOWN_TIMEOUT_S"] == "35"  # 45 - 5 s preStop - 5 s margin


def test_staging_spot_gets_a_pdb(kube: Kube, ns: str) -> None:
    kube.apply(gptd_manifest("spotty", ns, _spec()))
    pdb = kube.eventually(lambda: kube.get("poddisruptionbudget", "spotty", ns), "PDB for staging on spot")
    assert pdb["spec"]["maxUnavailable"] == 1
