"""A real Prometheus on loopback: built from its Go module by `hack/tools.sh prometheus` (or $GPT_PROMETHEUS),
scraping given targets every second, with rule files loaded, queried over its HTTP API."""

from __future__ import annotations

import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


def prometheus_binary() -> str:
    """$GPT_PROMETHEUS (hack/test.sh exports it), else hack/tools.sh's cached build (built on first use)."""
    given = os.environ.get("GPT_PROMETHEUS")
    if given:
        return given
    built = subprocess.run(["bash", str(ROOT / "hack" / "tools.sh"), "prometheus"], capture_output=True, text=True)
    assert built.returncode == 0, f"hack/tools.sh prometheus failed:\n{built.stderr[-3000:]}"
    return built.stdout.strip().splitlines()[-1]


@dataclass
class Prometheus:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        """The matrix of `expr` over [start, end]; a query error fails with Prometheus' message."""
        response = httpx.get(
            f"{self.base_url}/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": step},
            timeout=30,
        )
        body = response.json()
        assert body.get("status") == "success", f"{expr}\n -> {body.get('errorType')}: {body.get('error')}"
        return body["data"]["result"]

    def targets_up(self) -> dict[str, str]:
        """scrape URL -> health ("up", "down", "unknown") of each active target."""
        active = httpx.get(f"{self.base_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {target["scrapeUrl"]: target["health"] for target in active}

    def rules(self) -> list[dict]:
        """Every loaded rule with its group, health and last error (GET /api/v1/rules)."""
        groups = httpx.get(f"{self.base_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule | {"group": group["name"]} for group in groups for rule in group["rules"]]


def series_with_data(matrix: list[dict]) -> int:
    """How many series have at least one finite value (NaN, a ratio of nothing to nothing, is no data)."""
    return sum(any(math.isfinite(float(value)) for _t, value in series["values"]) for series in matrix)


def start_prometheus(tmp: Path, targets: dict[str, dict], rule_files: list[Path]) -> Prometheus:
    """Prometheus scraping (and evaluating rules) every second; `targets` maps a job name to
    {"targets": ["host:port"], "labels": {...}} (the static config of that job)."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [static]} for job, static in targets.items()],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp / "prometheus.log"
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/-/ready", timeout=2).status_code == 200:
                return Prometheus(base_url, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"prometheus did not become ready:\n{log_path.read_text()}")


def stop_prometheus(prometheus: Prometheus) -> None:
    prometheus.process.terminate()
    try:
        prometheus.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        prometheus.process.kill()
