"""Scale to zero when idle (spec.schedule.idle) on the real node: the deployment sleeps after a minute without a
request, its client Service answers through the activator pod, and the next request, held there, wakes it and is
served once the model has loaded. The wait a user sees on that first request is printed (the README's number)."""

from __future__ import annotations

import time
import uuid

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest
from .realpods import ON_REAL_NODE, InClusterClient, on_real_node, service_url

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("free_the_node")]

SLEEP_AFTER_S = 60  # the smallest the CRD accepts
ACTIVATOR = {"serving.gpt-operator.dev/activator": "idle"}


def _sleeping_reason(obj: dict) -> str | None:
    status = obj.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Sleeping"), {})
    return cond.get("reason") if cond.get("status") == "True" else None


def test_an_idle_deployment_sleeps_and_the_next_request_wakes_it(kube: Kube, ns: str, client: InClusterClient) -> None:
    name = "idle"
    spec = on_real_node(
        {
            "environment": "dev",
            "model": {"source": "builtin:tiny"},
            "replicas": 1,
            # no off windows (CI runs at any hour): only the idle clock puts it to sleep
            "schedule": {
                "offWindows": [],
                "idle": {"sleepAfterSeconds": SLEEP_AFTER_S, "wakeTimeoutSeconds": 240, "nodeSelector": ON_REAL_NODE},
            },
        }
    )
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 1, timeout=300)
    url = service_url(kube, ns, name)
    email, password = f"idle-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
    kube.eventually(lambda: client.run("converse", url, email, password)["status"] == 200, "a first conversation")
    assert (kube.get("deployment", f"{name}-activator", ns) or {}).get("status", {}).get("readyReplicas") == 1

    # a minute without a request: asleep, no runtime pod, the client Service on the activator
    idle_asleep = lambda o: _sleeping_reason(o) == "Idle"  # noqa: E731
    asleep = kube.wait_gptd(ns, name, idle_asleep, "asleep (Idle)", timeout=SLEEP_AFTER_S + 60)
    assert asleep["status"]["phase"] == "Sleeping"
    kube.eventually(lambda: not kube.pods(ns, f"{NAME_LABEL}={name}"), "no runtime pod left", timeout=120)
    assert (kube.get("service", name, ns) or {})["spec"]["selector"] == ACTIVATOR
    health = client.run("health", url)  # the activator answers probes itself: they do not wake the model
    assert health["status"] == 200, health
    time.sleep(5)
    assert _sleeping_reason(kube.gptd(ns, name)) == "Idle", "a GET /health woke the deployment"

    # the next request is held by the activator while the deployment wakes, then served
    answer = client.run("cold", url, email, password, "240", timeout=300)
    assert answer["first_status"] in (201, 409) and answer["status"] == 200, answer
    print(f"\nfirst request after idle sleep: answered in {answer['waited_s']} s (builtin:tiny on this node)")
    woke = kube.gptd(ns, name)
    assert _sleeping_reason(woke) is None and woke["status"]["phase"] != "Sleeping", woke["status"]
    kube.eventually(
        lambda: (kube.get("service", name, ns) or {})["spec"]["selector"].get(NAME_LABEL) == name,
        "the client Service back on the runtime pods",
        timeout=60,
    )
