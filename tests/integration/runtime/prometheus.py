"""A real Prometheus on loopback: built from its Go module by `hack/tools.sh prometheus` (or $GPT_PROMETHEUS),
scraping given targets every second, with rule files loaded, queried over its HTTP API."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from ...tools import tool_binary
from .conftest import free_port, stop_process, wait_until_ready

ROOT = Path(__file__).resolve().parents[3]


def prometheus_binary() -> str:
    """$GPT_PROMETHEUS (hack/test.sh exports it), else hack/tools.sh's cached build (built on first use)."""
    return tool_binary("prometheus", "GPT_PROMETHEUS")


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
    wait_until_ready(process, f"{base_url}/-/ready", log_path, "prometheus", timeout=60)
    return Prometheus(base_url, process, log_path)


def stop_prometheus(prometheus: Prometheus) -> None:
    stop_process(prometheus.process)
