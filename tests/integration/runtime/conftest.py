"""A real runtime: `python -m gpt_runtime` in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RuntimeServer:
    base_url: str
    ws_url: str
    jwt_secret: str
    log_path: Path
    process: subprocess.Popen

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def signup_and_login(
        self, email: str | None = None, password: str = "correct horse battery", *, verify: bool = False
    ) -> str:
        """A fresh account's access token; `verify` follows the mailed link first (admin addresses need it)."""
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        with self.client() as client:
            assert client.post("/auth/signup", json={"email": email, "password": password}).status_code == 201
            if verify:
                token = mailed_token(self.wait_for_mail(email, "Verify"))
                assert client.post("/auth/verify-email", json={"token": token}).status_code == 200
            response = client.post("/auth/login", json={"email": email, "password": password})
            assert response.status_code == 200, response.text
            return response.json()["access_token"]

    def logs(self) -> str:
        return self.log_path.read_text()

    def mails(self, to: str) -> list[dict]:
        """The mails to `to` that the runtime printed to its log (no mail transport configured), oldest first."""
        found = []
        for line in self.logs().splitlines():
            if '"mail"' in line:
                with contextlib.suppress(ValueError):
                    mail = json.loads(line).get("mail")
                    if isinstance(mail, dict) and mail.get("to") == to:
                        found.append(mail)
        return found

    def wait_for_mail(self, to: str, subject_has: str, *, after: int = 0, timeout_s: float = 10) -> dict:
        """The first logged mail to `to` whose subject contains `subject_has`, past the first `after` mails."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            matching = [m for m in self.mails(to) if subject_has in m["subject"]]
            if len(matching) > after:
                return matching[after]
            time.sleep(0.05)
        raise AssertionError(f"no mail {subject_has!r} to {to} in the runtime's log")


def mailed_token(mail: dict) -> str:
    """The one-time token in a mail's link."""
    match = re.search(r"https?://\S+[?&]token=([^\s&]+)", mail["body"])
    assert match, mail["body"]
    return urllib.parse.unquote(match.group(1))


def start_runtime(tmp: Path, ready_path: str = "/ready", *, port: int | None = None, **env: str) -> RuntimeServer:
    """Start the runtime with GPT_* settings from `env` (on `port`, default a free one); wait until `ready_path`
    answers 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    secret = secrets.token_urlsafe(48)
    log_path = tmp / "runtime.log"
    full_env = {
        **os.environ,
        "GPT_PORT": str(port),
        "GPT_DATA_DIR": str(tmp / "data"),
        "GPT_JWT_SECRET": secret,
        "GPT_MODEL_SOURCE": "fake:echo",
        **env,
    }
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gpt_runtime"], env=full_env, stdout=log_file, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, f"{base_url}{ready_path}", log_path, "runtime", timeout=120, request_timeout=5)
    return RuntimeServer(base_url, f"ws://127.0.0.1:{port}", secret, log_path, process)


def stop_runtime(server: RuntimeServer) -> None:
    stop_process(server.process)


def wait_until_ready(
    process: subprocess.Popen,
    url: str,
    log_path: Path,
    what: str,
    *,
    timeout: float,
    request_timeout: float = 2,
    interval: float = 0.2,
) -> None:
    """Poll `url` until it answers 200; a process that exits first, or a timeout, raises with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=request_timeout).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    process.kill()
    raise RuntimeError(f"{what} did not become ready:\n{log_path.read_text()}")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition (a GET /metrics): (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """Runtime on the fake engine: 10 ms per token, a 300-token context window, 64 kB bodies."""
    runtime = start_runtime(
        tmp_path_factory.mktemp("runtime"),
        GPT_MODEL_SOURCE="fake:echo?delay_ms=10&context=300",
        GPT_MAX_BODY_BYTES="65536",
        GPT_MAX_PROMPT_CHARS="20000",
        GPT_ADMIN_EMAILS="root@example.com",
        GPT_RATE_LIMIT_ANONYMOUS="100000",
        GPT_QUOTA_FREE="1000,10000,10000000,100000000",
    )
    yield runtime
    stop_runtime(runtime)


@pytest.fixture
def token(server: RuntimeServer) -> str:
    return server.signup_and_login()


@pytest.fixture
def api(server: RuntimeServer, token: str) -> Iterator[httpx.Client]:
    with server.client(token) as client:
        yield client
