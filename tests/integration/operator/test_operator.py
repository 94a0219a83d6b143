"""The real kopf operator against a Kubernetes API emulator (kmock) over HTTP: what a user sees."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from aiohttp import web

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
CONFIGMAPS = "v1/configmaps"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
GPTD = "serving.gpt-operator.dev/v1alpha1/gptdeployments"


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


async def test_create_renders_owned_children_and_reports_status(cluster, operator, gptd, eventually) -> None:
    created = await cluster.put_object(GPTD, gptd(environment="staging", replicas=2))
    uid = created["metadata"]["uid"]

    dep = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["ownerReferences"][0]["uid"] == uid
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    await eventually(lambda: cluster.names(SERVICES) == ["chat"])  # applied right after the Deployment
    assert len(cluster.names(CONFIGMAPS)) == 1

    pending = await eventually(lambda: (o := cluster.get(GPTD, "chat")) and o.get("status", {}).get("phase") and o)
    assert pending["status"]["phase"] in ("Pending", "Progressing")
    assert pending["status"]["observedGeneration"] == 1

    await cluster.settle_deployments()
    available = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Available" and o)
    assert available["status"]["ready"] == "2/2"
    assert condition(available, "Ready")["status"] == "True"
    assert available["status"]["capacityType"] == "spot"


async def patch_gptd(cluster, name: str, body: dict) -> dict:
    """What `kubectl patch --type merge` / `kubectl annotate` send."""
    path = f"/apis/serving.gpt-operator.dev/v1alpha1/namespaces/ml/gptdeployments/{name}"
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.request("PATCH", path, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def events(cluster, reason: str) -> list[dict]:
    found = [cluster.get("v1/events", n) for n in cluster.names("v1/events")]
    return [e for e in found if e and e.get("reason") == reason]


async def available(cluster, eventually, name: str = "chat") -> dict:
    await cluster.settle_deployments()
    return await eventually(lambda: (o := cluster.get(GPTD, name))["status"]["phase"] == "Available" and o)


async def test_steady_state_makes_no_writes(cluster, operator, gptd, eventually) -> None:
    await cluster.put_object(GPTD, gptd(environment="staging"))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    await available(cluster, eventually)
    await asyncio.sleep(0.5)  # let the last status patch land
    before = cluster.writes()
    await asyncio.sleep(1.5)  # several timer ticks at 0.2 s
    assert cluster.writes() == before


async def test_night_sleep_scales_to_zero_removes_hpa_and_wakes_by_annotation(
    cluster, operator, gptd, eventually, clock
) -> None:
    await cluster.put_object(
        GPTD, gptd(environment="dev", replicas=2, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    )
    await eventually(lambda: cluster.get(HPAS, "chat"))
    await available(cluster, eventually)

    clock.now = datetime(2026, 3, 4, 21, 0, tzinfo=UTC)  # Wednesday 21:00 UTC: asleep
    asleep = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Sleeping" and o)
    assert cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 0
    assert cluster.get(HPAS, "chat") is None
    assert asleep["status"]["savedReplicas"] == 2
    assert asleep["status"]["nextTransitionTime"] == "2026-03-05T08:00:00Z"
    assert condition(asleep, "Sleeping")["reason"] == "OffWindow"
    await eventually(lambda: events(cluster, "Sleeping"))

    await patch_gptd(
        cluster, "chat", {"metadata": {"annotations": {"serving.gpt-operator.dev/wake-until": "2026-03-04T23:00:00Z"}}}
    )
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 2)
    await eventually(lambda: cluster.get(HPAS, "chat"))
    woken = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] != "Sleeping" and o)
    assert condition(woken, "Sleeping")["reason"] == "WokenByAnnotation"


async def test_blue_green_promotes_switches_the_service_and_prunes_the_old_colour(
    cluster, operator, gptd, eventually, clock
) -> None:
    rollout = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionSeconds": 0, "scaleDownDelaySeconds": 60}}
    await cluster.put_object(GPTD, gptd(environment="staging", rollout=rollout))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-blue"))
    await available(cluster, eventually)
    assert cluster.get(SERVICES, "chat")["spec"]["selector"]["serving.gpt-operator.dev/track"] == "blue"
    old_configmaps = cluster.names(CONFIGMAPS)

    await patch_gptd(cluster, "chat", {"spec": {"model": {"source": "builtin:small"}}})
    green = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-green"))
    assert (
        green["spec"]["template"]["metadata"]["labels"]["serving.gpt-operator.dev/revision"]
        != (
            cluster.get(DEPLOYMENTS, "chat-blue")["spec"]["template"]["metadata"]["labels"][
                "serving.gpt-operator.dev/revision"
            ]
        )
    )
    assert cluster.get(SERVICES, "chat")["spec"]["selector"]["serving.gpt-operator.dev/track"] == "blue"
    assert cluster.get(SERVICES, "chat-preview")["spec"]["selector"]["serving.gpt-operator.dev/track"] == "green"

    await cluster.settle_deployments()
    await eventually(
        lambda: cluster.get(SERVICES, "chat")["spec"]["selector"]["serving.gpt-operator.dev/track"] == "green"
    )
    promoted = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("activeTrack") == "green" and o)
    assert promoted["status"]["scaleDownTime"] == "2026-03-04T12:01:00Z"
    assert cluster.get(DEPLOYMENTS, "chat-blue") is not None  # kept for the scale-down delay
    await eventually(lambda: events(cluster, "Promoted"))

    clock.now += timedelta(seconds=61)
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-blue") is None)
    await eventually(lambda: not set(old_configmaps) & set(cluster.names(CONFIGMAPS)))


async def test_invalid_spec_is_reported_and_fixed_spec_recovers(cluster, operator, gptd, eventually) -> None:
    # kmock does not run the CRD's CEL rules, so this reaches the operator as it would from an old API server.
    await cluster.put_object(GPTD, gptd(autoscaling={"minReplicas": 5, "maxReplicas": 2}))
    bad = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("phase") == "Degraded" and o)
    degraded = condition(bad, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "minReplicas (5) must not exceed maxReplicas (2)" in degraded["message"]
    assert cluster.names(DEPLOYMENTS) == []
    await eventually(lambda: events(cluster, "InvalidSpec"))

    await patch_gptd(cluster, "chat", {"spec": {"autoscaling": {"maxReplicas": 6}}})
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    fixed = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] != "Degraded" and o)
    assert fixed["status"]["observedGeneration"] == 2


async def test_canary_abort_annotation_is_consumed_and_returns_traffic_to_stable(
    cluster, operator, gptd, eventually
) -> None:
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    await cluster.put_object(GPTD, gptd(environment="staging", replicas=2, rollout=rollout))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-stable"))
    await available(cluster, eventually)

    await patch_gptd(cluster, "chat", {"spec": {"model": {"source": "builtin:small"}}})
    canary = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary"))
    assert canary["spec"]["replicas"] == 1
    assert cluster.get(DEPLOYMENTS, "chat-stable")["spec"]["replicas"] == 1
    await cluster.settle_deployments()
    paused = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("phase") == "Paused" and o)
    assert paused["status"]["canaryWeight"] == 50 and paused["status"]["currentStep"] == 1

    await patch_gptd(cluster, "chat", {"metadata": {"annotations": {"serving.gpt-operator.dev/abort": "true"}}})
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary") is None)
    aborted = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Degraded" and o)
    assert condition(aborted, "Degraded")["reason"] == "RolloutAborted"
    # The annotation goes once status records the abort (the next reconcile), then the record goes too.
    cleared = await eventually(
        lambda: (
            "serving.gpt-operator.dev/abort"
            not in ((o := cluster.get(GPTD, "chat"))["metadata"].get("annotations") or {})
            and not o["status"].get("lastActions")
            and o
        )
    )
    assert condition(cleared, "Degraded")["reason"] == "RolloutAborted"
    assert cluster.get(DEPLOYMENTS, "chat-stable")["spec"]["replicas"] == 2


async def test_retry_after_an_abort_rolls_the_same_revision_out_again_and_history_keeps_both(
    cluster, operator, gptd, eventually
) -> None:
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    await cluster.put_object(GPTD, gptd(environment="staging", replicas=2, rollout=rollout))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-stable"))
    await available(cluster, eventually)
    first = cluster.get(GPTD, "chat")["status"]
    assert [e["number"] for e in first["history"]] == [1] and first["history"][0]["revision"] == first["stableRevision"]

    await patch_gptd(cluster, "chat", {"spec": {"model": {"source": "builtin:small"}}})
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary"))
    await cluster.settle_deployments()
    await eventually(lambda: cluster.get(GPTD, "chat")["status"].get("phase") == "Paused")
    await patch_gptd(cluster, "chat", {"metadata": {"annotations": {"serving.gpt-operator.dev/abort": "a1"}}})
    aborted = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("abortedRevision") and o)
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary") is None)

    await patch_gptd(cluster, "chat", {"metadata": {"annotations": {"serving.gpt-operator.dev/retry": "r1"}}})
    canary = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary"))
    assert canary["metadata"]["labels"]["serving.gpt-operator.dev/revision"] == aborted["status"]["abortedRevision"]
    await cluster.settle_deployments()
    paused = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("phase") == "Paused" and o)
    assert paused["status"]["currentStep"] == 1 and not paused["status"].get("abortedRevision")
    assert events(cluster, "RolloutRetried")
    await eventually(
        lambda: "serving.gpt-operator.dev/retry" not in (cluster.get(GPTD, "chat")["metadata"].get("annotations") or {})
    )
    revision = canary["metadata"]["labels"]["serving.gpt-operator.dev/revision"]
    await patch_gptd(cluster, "chat", {"metadata": {"annotations": {"serving.gpt-operator.dev/promote": "p1"}}})
    for _ in range(40):  # the promotion rolls the stable track, grows it, then removes the canary
        await cluster.settle_deployments()
        done = cluster.get(GPTD, "chat")
        if done["status"].get("stableRevision") == revision:
            break
        await asyncio.sleep(0.25)
    assert done["status"]["stableRevision"] == revision
    assert [e["number"] for e in done["status"]["history"]] == [2, 1]


async def test_hpa_scales_through_the_scale_subresource(cluster, operator, gptd, eventually) -> None:
    """What an HPA does: read the Scale (selector, replicas), then write spec.replicas through it."""
    await cluster.put_object(GPTD, gptd(environment="prod", replicas=3))
    hpa = await eventually(lambda: cluster.get(HPAS, "chat"))
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "name": "chat",
    }
    await available(cluster, eventually)
    scale_path = "/apis/serving.gpt-operator.dev/v1alpha1/namespaces/ml/gptdeployments/chat/scale"
    async with cluster.request("GET", scale_path) as resp:
        scale = await resp.json()
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {
        "replicas": 3,
        "selector": "serving.gpt-operator.dev/name=chat,serving.gpt-operator.dev/track=main",
    }

    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.request("PATCH", scale_path, json={"spec": {"replicas": 5}}, headers=headers) as resp:
        assert resp.status == 200
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 5)
    await cluster.settle_deployments()
    await eventually(lambda: cluster.get(GPTD, "chat")["status"]["ready"] == "5/5")
    assert cluster.get(HPAS, "chat")["spec"]["minReplicas"] == 3


@pytest_asyncio.fixture()
async def prometheus():
    """A Prometheus answering every instant query with `answer["value"]`, recording the queries."""
    answer: dict = {"value": "0", "queries": []}

    async def query(request: web.Request) -> web.Response:
        answer["queries"].append(request.query["query"])
        result = [{"metric": {}, "value": [0, answer["value"]]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    answer["url"] = f"http://127.0.0.1:{port}"
    yield answer
    await runner.cleanup()


async def test_canary_analysis_failure_aborts_the_rollout(cluster, operator, gptd, eventually, prometheus) -> None:
    analysis = {
        "prometheusURL": prometheus["url"],
        "intervalSeconds": 5,
        "metrics": [{"name": "error-rate", "query": 'errors{service="{{name}}-canary"}', "max": 0.05}],
    }
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}], "analysis": analysis}}
    await cluster.put_object(GPTD, gptd(environment="staging", replicas=2, rollout=rollout))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-stable"))
    await available(cluster, eventually)
    assert prometheus["queries"] == []  # nothing to analyse without a canary

    prometheus["value"] = "0.2"
    await patch_gptd(cluster, "chat", {"spec": {"model": {"source": "builtin:small"}}})
    aborted = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"].get("abortedRevision") and o)
    assert condition(aborted, "Degraded")["reason"] == "RolloutAborted"
    assert aborted["status"]["analysis"]["results"] == [
        {"name": "error-rate", "phase": "Failed", "max": 0.05, "passed": False, "value": 0.2}
    ]
    assert prometheus["queries"][0] == 'errors{service="chat-canary"}'
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-canary") is None)
    assert cluster.get(DEPLOYMENTS, "chat-stable")["spec"]["replicas"] == 2
    failed = await eventually(lambda: events(cluster, "AnalysisFailed"))
    assert failed[0]["message"] == "error-rate = 0.2 > 0.05"


async def test_refused_child_is_reported_without_losing_rollout_state(cluster, operator, gptd, eventually) -> None:
    await cluster.put_object(GPTD, gptd(environment="staging"))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    before = await available(cluster, eventually)

    cluster.refuse = {"services": (422, "Invalid", 'Service "chat" is invalid: spec.type: Unsupported value')}
    await patch_gptd(cluster, "chat", {"spec": {"service": {"type": "NodePort"}}})
    failed = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Degraded" and o)
    degraded = condition(failed, "Degraded")
    assert degraded["reason"] == "ApplyFailed"
    assert "spec.type: Unsupported value" in degraded["message"]
    assert failed["status"]["observedGeneration"] == 1  # generation 2 did not take effect
    assert failed["status"]["stableRevision"] == before["status"]["stableRevision"]
    await eventually(lambda: events(cluster, "ApplyFailed"))

    cluster.refuse = {}
    await eventually(lambda: cluster.get(SERVICES, "chat")["spec"]["type"] == "NodePort", within=15)
    recovered = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Available" and o)
    assert recovered["status"]["observedGeneration"] == 2


SECRETS = "v1/secrets"
SECRET_PATH = "/api/v1/namespaces/ml/secrets"


async def test_jwt_secret_is_created_once_owned_and_recreated_when_deleted(cluster, operator, gptd, eventually) -> None:
    created = await cluster.put_object(GPTD, gptd(environment="staging", replicas=2))
    secret = await eventually(lambda: cluster.get(SECRETS, "chat-jwt"))
    owner = secret["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in owner] == [
        ("GPTDeployment", "chat", created["metadata"]["uid"], True)
    ]
    assert secret["metadata"]["labels"]["serving.gpt-operator.dev/name"] == "chat"
    key = base64.b64decode(secret["data"]["GPT_JWT_SECRET"]).decode()
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 48
    # the Secret is created before the children are applied: the Deployment follows a moment later
    dep = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    pod = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "chat-jwt"}} in pod["envFrom"]
    ready = await available(cluster, eventually)
    assert ready["status"]["jwtSecret"] == "chat-jwt"

    await asyncio.sleep(1.0)  # several timer ticks at 0.2 s: the Secret is read, never written again
    assert cluster.writes(SECRET_PATH) == [f"POST {SECRET_PATH}"]
    assert cluster.get(SECRETS, "chat-jwt") == secret

    async with cluster.request("DELETE", f"{SECRET_PATH}/chat-jwt") as resp:
        assert resp.status == 200
    again = await eventually(lambda: cluster.get(SECRETS, "chat-jwt"))
    assert again["data"]["GPT_JWT_SECRET"] != secret["data"]["GPT_JWT_SECRET"]  # a new key, as after a rotation
    assert again["metadata"]["ownerReferences"] == owner
    await asyncio.sleep(0.6)
    assert cluster.writes(SECRET_PATH) == [
        f"POST {SECRET_PATH}",
        f"DELETE {SECRET_PATH}/chat-jwt",
        f"POST {SECRET_PATH}",
    ]


async def test_an_existing_jwt_secret_is_never_overwritten(cluster, operator, gptd, eventually) -> None:
    mine = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-jwt", "namespace": "ml"}}
    mine["data"] = {"GPT_JWT_SECRET": base64.b64encode(b"chosen by hand").decode()}
    stored = await cluster.put_object(SECRETS, mine)
    await cluster.put_object(GPTD, gptd(environment="staging"))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    await available(cluster, eventually)
    assert cluster.writes(SECRET_PATH) == []
    assert cluster.get(SECRETS, "chat-jwt") == stored
