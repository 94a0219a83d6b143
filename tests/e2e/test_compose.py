"""compose.yaml on one machine, as its README section runs it: `docker compose up`, a user's chat, an async job
that the worker service (not the API process) runs, and the data still there after `down` and `up` again.

Needs the Docker engine (hack/images/dockerd.sh), the images `bash hack/images/build.sh runtime redis prometheus`
makes (the `monitoring` profile is on), and the Compose plugin (`bash hack/tools.sh docker-compose`, built on first
use; GPT_DOCKER_COMPOSE names another binary). The cluster is not used. The project runs on free ports with a unique
name, the fake model and secrets made here; `down -v` removes its containers and volumes at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..tools import tool_binary
from .kube import ROOT, free_port

IMAGES = (
    "ghcr.io/gpt-operator/gpt-runtime:0.1.0",
    "gpt-operator.local/redis:7",
    "gpt-operator.local/prometheus:v0.316.0",
)
UP_TIMEOUT_S = 300


class Stack:
    """One Compose project of compose.yaml, driven with the `docker compose` CLI plugin."""

    def __init__(self, project: str, env: dict[str, str], env_file: Path):
        self.project, self.env, self.env_file = project, env, env_file
        self.url = f"http://127.0.0.1:{env['GPT_PORT']}"
        self.worker_metrics = f"http://127.0.0.1:{env['GPT_WORKER_METRICS_PORT']}/metrics"
        self.prometheus = f"http://127.0.0.1:{env['GPT_PROMETHEUS_PORT']}"

    def compose(self, *args: str, check: bool = True, timeout: float = UP_TIMEOUT_S * 2) -> subprocess.CompletedProcess:
        command = ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "--env-file", str(self.env_file)]
        result = subprocess.run(
            [*command, "-p", self.project, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            logs = subprocess.run(
                [*command, "-p", self.project, "logs", "--no-color", "--tail", "40"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            pytest.fail(f"docker compose {' '.join(args)}: {result.stderr[-3000:]}\n{logs.stdout[-6000:]}")
        return result

    def up(self) -> None:
        """`up -d --wait`: every service healthy (the runtime's /ready answers 200)."""
        self.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S))
        assert httpx.get(f"{self.url}/ready", timeout=10).status_code == 200

    def redis(self, *args: str) -> str:
        """redis-cli inside the redis service, authenticated from its environment (no password in argv)."""
        script = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "$0" "$@"'
        port = self.env["GPT_REDIS_PORT"]
        return self.compose("exec", "-T", "redis", "sh", "-c", script, port, *args).stdout.strip()


def compose_plugin() -> None:
    """Make `docker compose` work: GPT_DOCKER_COMPOSE or hack/tools.sh's build, linked as the CLI plugin."""
    plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    binary = tool_binary("docker-compose")
    if not link.exists():
        link.symlink_to(binary)
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    assert version.returncode == 0, f"`docker compose` does not work: {version.stderr}"


def remove_stale_projects() -> list[str]:
    """Take down what a killed earlier run left (its containers restart with dockerd); the names removed."""
    listed = subprocess.run(["docker", "compose", "ls", "-a", "--format", "json"], capture_output=True, text=True)
    stale = [p["Name"] for p in json.loads(listed.stdout or "[]") if p["Name"].startswith("gpt-compose-")]
    for name in stale:
        subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--timeout", "1"], capture_output=True)
    return stale


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    compose_plugin()
    remove_stale_projects()
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode]
    assert not missing, f"images {missing} are not built: bash hack/images/build.sh runtime redis prometheus"
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"  # not the checkout's .env, if a user wrote one
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT_")}
    env.update(
        GPT_JWT_SECRET=secrets.token_hex(32),
        GPT_REDIS_PASSWORD=secrets.token_hex(24),
        GPT_MODEL_SOURCE="fake:echo?delay_ms=10",
        GPT_HOST="127.0.0.1",
        GPT_PORT=str(free_port()),
        GPT_REDIS_PORT=str(free_port()),
        GPT_WORKER_METRICS_PORT=str(free_port()),
        GPT_PROMETHEUS_PORT=str(free_port()),
        COMPOSE_PROFILES="monitoring",  # every command, `down` included, takes Prometheus along
    )
    stack = Stack(f"gpt-compose-{uuid.uuid4().hex[:8]}", env, env_file)
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--timeout", "10", check=False)


def jobs_succeeded(metrics_text: str) -> float:
    """jobs_total{outcome="succeeded"} in a Prometheus exposition (0 when the series is absent)."""
    found = re.search(r'^jobs_total\{outcome="succeeded"\} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def scrape_health(prometheus: str) -> dict[str, str]:
    """Each scrape job's target health as Prometheus reports it (GET /api/v1/targets)."""
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in targets}


def test_missing_secret_stops_compose_with_its_name(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "GPT_JWT_SECRET"}
    command = ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "--env-file", str(stack.env_file), "config"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "set GPT_JWT_SECRET in .env" in result.stderr
    # positive control: with the secret the same command renders the file
    assert subprocess.run(command, env=stack.env, capture_output=True, text=True).returncode == 0


def test_chat_job_on_worker_and_data_kept_across_down_up(stack: Stack) -> None:
    stack.up()
    account = {"email": f"compose-{uuid.uuid4().hex[:6]}@example.com", "password": "compose-password-1"}
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        assert client.post("/auth/signup", json=account).status_code == 201
        login = client.post("/auth/login", json=account)
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        cid = client.post("/conversations", json={"title": "compose"}).json()["id"]
        reply = client.post("/generate", json={"prompt": "hello compose", "conversation_id": cid, "max_tokens": 8})
        assert reply.status_code == 200, reply.text

        # an async job: accepted by the API, run by the worker service; with the worker stopped it waits
        stack.compose("stop", "worker")
        accepted = client.post(
            "/generate", json={"prompt": "later please", "conversation_id": cid, "async": True, "max_tokens": 8}
        )
        assert accepted.status_code == 202, accepted.text
        time.sleep(5)
        assert client.get(accepted.json()["location"]).json()["status"] == "queued"
        stack.compose("start", "worker")
        deadline = time.monotonic() + 60
        while (job := client.get(accepted.json()["location"]).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"job not done in 60 s: {job}"
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        assert jobs_succeeded(httpx.get(stack.worker_metrics, timeout=10).text) == 1
        assert jobs_succeeded(client.get("/metrics").text) == 0  # the API process ran none
        assert "worker" not in client.get("/ready").json()["checks"]  # and has no in-process worker
        before = client.get(f"/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in before] == ["user", "assistant", "user", "assistant"]
    assert before[2]["content"] == "later please"
    # the monitoring profile: Prometheus scrapes the runtime and the worker on the ports given, with the rules loaded
    deadline = time.monotonic() + 60
    while (health := scrape_health(stack.prometheus)) != {"gpt-runtime": "up", "gpt-worker": "up", "prometheus": "up"}:
        assert time.monotonic() < deadline, f"Prometheus' targets: {health}"
        time.sleep(1)
    rules = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {"gpt-runtime", "gpt-operator"} <= {group["name"] for group in rules}
    assert stack.redis("SET", "compose-marker", "kept") == "OK"

    # down (containers removed) and up: the named volumes bring everything back
    stack.compose("down", "--timeout", "30")
    stack.up()
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        login = client.post("/auth/login", json=account)
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        after = client.get(f"/conversations/{cid}")
        assert after.status_code == 200, after.text
        assert after.json()["messages"] == before
    assert stack.redis("GET", "compose-marker") == "kept"  # Redis' append-only file, on its volume

    # positive control: without the volumes (down -v) the account, its conversation and Redis' data are gone
    stack.compose("down", "-v", "--timeout", "30")
    stack.up()
    assert httpx.post(f"{stack.url}/auth/login", json=account, timeout=30).status_code == 401
    assert stack.redis("GET", "compose-marker") == ""
