"""spec.engine with the real kopf operator against the API emulator (the engine key Secret, status), and the
engine container's preStop wait run by a real shell against a real listening socket."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import time

import pytest
from gpt_operator.render.engine import wait_for_port_closed

pytestmark = pytest.mark.integration

DEPLOYMENTS = "apps/v1/deployments"
GPTD = "serving.gpt-operator.dev/v1alpha1/gptdeployments"
SECRETS = "v1/secrets"
SECRET_PATH = "/api/v1/namespaces/ml/secrets"
ENGINE = {"type": "llamacpp"}
SMOLLM = {"source": "builtin:smollm2-135m"}


@pytest.mark.asyncio
async def test_an_engine_gets_its_key_secret_once_and_status_names_it(cluster, operator, gptd, eventually) -> None:
    created = await cluster.put_object(GPTD, gptd(environment="staging", model=SMOLLM, engine=ENGINE))
    secret = await eventually(lambda: cluster.get(SECRETS, "chat-engine-key"))
    assert secret["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 48
    assert cluster.get(SECRETS, "chat-jwt")  # the JWT key as always

    pod = (await eventually(lambda: cluster.get(DEPLOYMENTS, "chat")))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["runtime", "engine"]
    ref = {"secretKeyRef": {"name": "chat-engine-key", "key": "api-key"}}
    runtime, engine = pod["containers"]
    assert {"name": "GPT_ENGINE_API_KEY", "valueFrom": ref} in runtime["env"]
    assert {"name": "LLAMA_API_KEY", "valueFrom": ref} in engine["env"]

    await cluster.settle_deployments()
    ready = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Available" and o)
    assert ready["status"]["engineSecret"] == "chat-engine-key"
    assert ready["status"]["jwtSecret"] == "chat-jwt"
    await asyncio.sleep(1.0)  # several resyncs and Secret checks at 0.5 s: each Secret was written once
    assert sorted(cluster.writes(SECRET_PATH)) == [f"POST {SECRET_PATH}", f"POST {SECRET_PATH}"]
    assert cluster.get(SECRETS, "chat-engine-key") == secret


@pytest.mark.asyncio
async def test_without_an_engine_there_is_no_engine_key(cluster, operator, gptd, eventually) -> None:
    await cluster.put_object(GPTD, gptd(environment="staging"))
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    await cluster.settle_deployments()
    ready = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Available" and o)
    assert "engineSecret" not in ready["status"]
    assert cluster.get(SECRETS, "chat-engine-key") is None
    assert cluster.writes(SECRET_PATH) == [f"POST {SECRET_PATH}"]  # chat-jwt alone


def test_the_engines_prestop_waits_while_the_runtime_listens_and_ends_when_it_stops() -> None:
    """The engine container's preStop, run by sh against this machine's /proc/net/tcp: it blocks while a
    socket listens on the runtime's port (here a free one) and returns once that socket is closed."""
    assert shutil.which("sh") and shutil.which("grep")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    wait = subprocess.Popen(["sh", "-c", wait_for_port_closed(port)])
    try:
        time.sleep(1.5)
        assert wait.poll() is None, "the preStop ended while the runtime still listened"
        listener.close()
        assert wait.wait(timeout=10) == 0
    finally:
        listener.close()
        if wait.poll() is None:
            wait.kill()
    done = subprocess.run(["sh", "-c", wait_for_port_closed(port)], timeout=10, check=False)
    assert done.returncode == 0  # nothing listening (the runtime has exited): it returns at once
