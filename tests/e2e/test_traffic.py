"""Traffic through Services during rollouts, schedules and failures, sent from a pod inside the cluster
(through kube-proxy) to real runtime pods. Revisions are told apart by what each runtime reports: `GET /health`
answers its pod's revision label (GPT_REVISION, from the downward API).

The GPTDeployments are staging/dev specs with builtin:tiny, sized and pinned by `realpods.on_real_node`.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest

from .kube import ABORT, NAME_LABEL, PROMOTE, REVISION_LABEL, TRACK_LABEL, WAKE_UNTIL, Kube, awake_for, gptd_manifest
from .realpods import InClusterClient, on_real_node, service_url, start_moto

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("free_the_node")]


def _spec(replicas: int, revision: int, **extra: Any) -> dict[str, Any]:
    spec = {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "replicas": replicas,
        "env": [{"name": "E2E_REVISION", "value": str(revision)}],
        **extra,
    }
    return on_real_node(spec)


def _revisions(kube: Kube, ns: str, name: str, track: str | None = None) -> set[str]:
    selector = f"{NAME_LABEL}={name}" + (f",{TRACK_LABEL}={track}" if track else "")
    return {p["metadata"]["labels"][REVISION_LABEL] for p in kube.ready_pods(ns, selector)}


def _answers(client: InClusterClient, url: str) -> str | None:
    answer = client.run("health", url)
    return answer["body"]["revision"] if answer["status"] == 200 else None


def test_rolling_update_loses_no_request(kube: Kube, ns: str, client: InClusterClient) -> None:
    """Two replicas, a template change, and a client sending a request every 50 ms on new connections: every
    request is answered, first by the old revision, then by the new one only."""
    name = "rolling"
    kube.apply(gptd_manifest(name, ns, _spec(2, 1)))
    kube.wait_ready(ns, name, 2, timeout=180)
    (old,) = _revisions(kube, ns, name)
    url = service_url(kube, ns, name)

    watcher = client.popen("watch", url, "240")
    time.sleep(3)  # the loop has started on the old revision
    kube.apply(gptd_manifest(name, ns, _spec(2, 2)))
    kube.wait_gptd(ns, name, lambda o: o["status"].get("updateRevision") not in (None, old), "a new revision")
    result = client.finish(watcher)
    new = kube.gptd(ns, name)["status"]["updateRevision"]
    assert result["failures"] == [], result
    assert result["first"] == old and set(result["revisions"]) == {old, new}, result
    assert result["total"] > 100, result
    kube.wait_ready(ns, name, 2, timeout=120)
    assert _revisions(kube, ns, name) == {new}


def test_blue_green_services_follow_promote_and_abort(kube: Kube, ns: str, client: InClusterClient) -> None:
    name = "bg"
    rollout = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 600}}
    kube.apply(gptd_manifest(name, ns, _spec(1, 1, rollout=rollout)))
    kube.wait_ready(ns, name, 1, timeout=180)
    (blue,) = _revisions(kube, ns, name, "blue")
    active, preview = service_url(kube, ns, name), service_url(kube, ns, f"{name}-preview")
    assert _answers(client, active) == blue

    kube.apply(gptd_manifest(name, ns, _spec(1, 2, rollout=rollout)))
    kube.wait_gptd(ns, name, lambda o: o["status"].get("phase") == "Paused", "green preview ready", timeout=180)
    (green,) = _revisions(kube, ns, name, "green")
    assert green != blue
    kube.eventually(lambda: _answers(client, preview) == green, "preview Service answers from green")
    counts = client.run("count", active, "20")
    assert counts == {"revisions": {blue: 20}, "failures": []}, "the active Service moved before promote"

    kube.annotate("gptd", name, ns, PROMOTE, "true")
    kube.eventually(lambda: _answers(client, active) == green, "active Service answers from green after promote")
    kube.eventually(lambda: _answers(client, preview) == blue, "preview Service answers from blue after promote")

    kube.annotate("gptd", name, ns, ABORT, "true")
    kube.eventually(lambda: _answers(client, active) == blue, "active Service back on blue after abort")
    assert client.run("count", active, "20") == {"revisions": {blue: 20}, "failures": []}


def test_canary_at_20_percent_gets_a_binomial_share_of_400_requests(
    kube: Kube, ns: str, client: InClusterClient
) -> None:
    name = "can"
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
    kube.apply(gptd_manifest(name, ns, _spec(10, 1, rollout=rollout)))
    kube.wait_ready(ns, name, 10, timeout=300)
    (stable,) = _revisions(kube, ns, name)
    kube.apply(gptd_manifest(name, ns, _spec(10, 2, rollout=rollout)))
    kube.wait_gptd(
        ns, name, lambda o: o["status"].get("canaryWeight") == 20 and o["status"].get("phase") == "Paused", "at 20%"
    )

    def split() -> bool:
        sizes = {t: len(kube.ready_pods(ns, f"{NAME_LABEL}={name},{TRACK_LABEL}={t}")) for t in ("stable", "canary")}
        return sizes == {"stable": 8, "canary": 2}

    kube.eventually(split, "8 stable + 2 canary pods ready", timeout=180)
    (canary,) = _revisions(kube, ns, name, "canary")
    url = service_url(kube, ns, name)
    kube.eventually(lambda: len(kube.endpoint_ips(ns, name)) == 10, "10 endpoints behind the Service")
    result = client.run("count", url, "400", timeout=300)
    assert result["failures"] == [], result
    assert set(result["revisions"]) == {stable, canary}, result
    # kube-proxy picks an endpoint at random per connection: the canary's count is Binomial(400, 0.2),
    # mean 80, sd 8; 4 sd either way (48..112) fails a correct split with probability < 1e-4.
    n, p = 400, 0.2
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    got = result["revisions"][canary]
    assert mean - 4 * sd <= got <= mean + 4 * sd, f"canary answered {got}/400 (expected {mean:.0f} ± {4 * sd:.0f})"


def test_sleep_takes_the_pods_away_and_wake_brings_them_back(kube: Kube, ns: str, client: InClusterClient) -> None:
    """A dev deployment whose schedule is asleep all day, every day: awake only through wake-until."""
    name = "sleepy"
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    spec = on_real_node(
        {
            "environment": "dev",
            "model": {"source": "builtin:tiny"},
            "replicas": 1,
            "schedule": {"timeZone": "UTC", "offWindows": [{"days": every_day, "start": "00:00", "end": "00:00",
                                                           "endDay": "Mon"}]},
        }
    )  # fmt: skip
    kube.apply(gptd_manifest(name, ns, spec, annotations=awake_for()))
    kube.wait_ready(ns, name, 1, timeout=180)
    url = service_url(kube, ns, name)
    assert _answers(client, url) is not None

    kube.annotate("gptd", name, ns, WAKE_UNTIL, None)
    kube.wait_gptd(ns, name, lambda o: o["status"].get("phase") == "Sleeping", "asleep")
    # gone, not just terminating (a stopping pod serves on through its preStop sleep)
    kube.eventually(lambda: not kube.list("pods", ns, f"{NAME_LABEL}={name}"), "no pods while asleep")
    asleep = client.run("count", url, "3")
    assert asleep["revisions"] == {} and len(asleep["failures"]) == 3, asleep

    kube.annotate("gptd", name, ns, WAKE_UNTIL, awake_for()[WAKE_UNTIL])
    kube.wait_ready(ns, name, 1, timeout=180)
    kube.eventually(lambda: _answers(client, url) is not None, "the Service answers again after wake")


@pytest.fixture(scope="module")
def dynamodb(kube: Kube, ns: str, operator: None) -> str:
    """moto's DynamoDB in the namespace: the shared store several runtime replicas need (each pod's own SQLite
    would give each replica its own accounts). Returns the endpoint URL (the Service's ClusterIP)."""
    return start_moto(kube, ns)


def test_a_pod_killed_mid_stream_gives_a_clean_error_and_the_next_request_is_served(
    kube: Kube, ns: str, client: InClusterClient, dynamodb: str
) -> None:
    """Two replicas of the default model sharing DynamoDB (as production would, through secretRef). One user's
    stream is cut by deleting its pod with a 1 s grace period: the client sees an error or a broken stream, never
    a reply that looks complete, and never hangs; the same token is then served by another pod."""
    name = "killme"
    kube.run(
        "create", "secret", "generic", "killme-store", "-n", ns,
        f"--from-literal=GPT_DATABASE_URL=dynamodb://gpt?region=us-east-1&endpoint_url={dynamodb}",
        "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
    )  # fmt: skip
    spec = _spec(2, 1, secretRef={"name": "killme-store"})
    spec["model"] = {"source": "builtin:smollm2-135m"}
    spec["resources"] = {"cpu": "100m", "memory": "2Gi", "gpu": 0}
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 2, timeout=300)
    url = service_url(kube, ns, name)
    signed = client.run("signup", url, f"kill-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery")
    assert signed["status"] == 200, signed
    token = signed["body"]["access_token"]

    stream = client.popen("stream", url, token, "400")
    assert stream.stderr is not None
    line = stream.stderr.readline()  # "started": the first tokens arrived
    assert line.strip() == "started", (line, client.finish(stream, timeout=60))
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in kube.ready_pods(ns, f"{NAME_LABEL}={name}")}
    busy = kube.eventually(
        lambda: [pod for pod, ip in pods.items() if _running(client, f"http://{ip}:8000") > 0],
        "the pod that serves the stream (engine_running > 0 in its /metrics)",
        timeout=30,
    )
    assert len(busy) == 1, busy
    kube.run("delete", "pod", busy[0], "-n", ns, "--grace-period=1", "--wait=false")
    result = client.finish(stream, timeout=120)
    assert result["status"] == 200 and result["chunks"] >= 1, result
    assert not result["done"] or result["error_event"], f"the cut stream looked complete: {result}"
    assert result["broke"] or result["error_event"], result

    answer = client.run("complete", url, token)
    assert answer["status"] == 200, answer
    assert answer["body"]["choices"][0]["message"]["content"], answer
    assert busy[0] not in {p["metadata"]["name"] for p in kube.ready_pods(ns, f"{NAME_LABEL}={name}")}


def _running(client: InClusterClient, pod_url: str) -> float:
    """The pod's engine gauge of running requests, from its /metrics (which pod serves the stream)."""
    proc = client.run("metrics", pod_url)
    return float(proc["running"])
