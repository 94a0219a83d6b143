"""promtool (Prometheus' own rule checker, built by hack/tools.sh) on manifests/monitoring: the rules parse, and
their unit tests (manifests/monitoring/tests/*.yaml) pass; a broken copy of a rule makes them fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "manifests" / "monitoring"


@pytest.fixture(scope="module")
def promtool() -> str:
    """$GPT_PROMTOOL (hack/test.sh exports it), else hack/tools.sh's cached build (built on first use)."""
    configured = os.environ.get("GPT_PROMTOOL")
    if configured:
        return configured
    built = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), "promtool"], capture_output=True, text=True, check=True
    )
    return built.stdout.strip().splitlines()[-1]


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def promtool_test_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in (directory / "tests").glob("*.yaml"))


def copy_of_monitoring(tmp_path: Path) -> Path:
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy, ignore=shutil.ignore_patterns("dashboards"))
    return copy


def test_the_rules_file_passes_promtool_check(promtool: str) -> None:
    checked = run(promtool, "check", "rules", "rules.yaml", cwd=MONITORING)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 17 rules found" in checked.stdout + checked.stderr


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    tested = run(promtool, "test", "rules", *promtool_test_files(MONITORING), cwd=MONITORING)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(promtool_test_files(MONITORING))


def test_a_changed_threshold_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Positive control: the error-rate alert at 5 % instead of 1 % no longer fires on 2 % errors."""
    copy = copy_of_monitoring(tmp_path)
    rules = (copy / "rules.yaml").read_text()
    assert rules.count("> 0.01\n") == 1
    (copy / "rules.yaml").write_text(rules.replace("> 0.01\n", "> 0.05\n"))
    tested = run(promtool, "test", "rules", *promtool_test_files(copy), cwd=copy)
    assert tested.returncode != 0
    assert "GPTRuntimeHighErrorRate" in tested.stdout + tested.stderr


def test_a_broken_expression_fails_the_check(promtool: str, tmp_path: Path) -> None:
    """Positive control: a PromQL syntax error in one rule fails `promtool check rules`."""
    copy = copy_of_monitoring(tmp_path)
    rules = (copy / "rules.yaml").read_text()
    broken = rules.replace("expr: max by (namespace, job) (job_queue_depth) > 1000", "expr: max by (namespace, job (")
    assert broken != rules
    (copy / "rules.yaml").write_text(broken)
    checked = run(promtool, "check", "rules", "rules.yaml", cwd=copy)
    assert checked.returncode != 0
    assert "FAILED" in checked.stdout + checked.stderr
