"""The alerting rules (manifests/monitoring/rules.yaml): every alert is complete (severity, summary, description,
a runbook section that exists), fired and held back by the promtool tests, uses only the contract's metric names,
and the PrometheusRule says the same. promtool itself runs in tests/integration/monitoring/test_promtool.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/gpt-operator/gpt-operator/blob/main/docs/runbook.md#"

# The metric names of issue 14 (the contract between the runtime, the operator, the rules and the dashboards).
CONTRACT = {
    # runtime
    "api_requests_total", "generation_tokens_total", "generation_requests_total", "cache_hits_total",
    "cache_misses_total", "rate_limit_exceeded_total", "generation_queue_depth", "generation_running",
    "engine_queue_depth", "engine_running", "jobs_total", "generation_active_streams",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "auth_events_total", "redis_errors_total",
    "job_queue_depth", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    # operator
    "gpt_operator_reconcile_total", "gpt_operator_reconcile_errors_total", "gpt_operator_phase",
    "gpt_operator_degraded", "gpt_operator_analysis_failures_total",
    "gpt_operator_progressing_since_timestamp_seconds", "gpt_operator_sleeping",
    "gpt_operator_wake_timestamp_seconds", "gpt_operator_last_successful_reconcile_timestamp_seconds",
}  # fmt: skip
CONTRACT_HISTOGRAMS = {
    "api_request_duration_seconds", "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "gpt_operator_reconcile_duration_seconds",
}  # fmt: skip
PROMETHEUS_OWN = {"up"}  # series Prometheus writes for every target

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"inf", "nan"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts(rules: dict) -> list[dict]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (by name or by a `__name__` matcher)."""
    names = {alt for alts in re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr) for alt in alts.split("|")}
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if match.group(2) is None and match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names


def outside_contract(names: set[str]) -> set[str]:
    """Names that are neither contract metrics, a contract histogram's series, nor Prometheus' own."""
    suffixes = ("_bucket", "_sum", "_count")
    histogram_series = {h + s for h in CONTRACT_HISTOGRAMS for s in suffixes}
    return names - CONTRACT - histogram_series - PROMETHEUS_OWN


def promtool_cases(tests: list[dict]) -> dict[str, dict[str, bool]]:
    """Per alert name: whether some promtool test case expects it firing, and whether one expects it silent."""
    seen: dict[str, dict[str, bool]] = {}
    for test_file in tests:
        for test in test_file["tests"]:
            for case in test.get("alert_rule_test") or []:
                entry = seen.setdefault(case["alertname"], {"fires": False, "silent": False})
                entry["fires" if case.get("exp_alerts") else "silent"] = True
    return seen


def untested(rules: dict, tests: list[dict]) -> list[str]:
    """Alerts without a promtool case that fires them and one that shows them silent."""
    cases = promtool_cases(tests)
    return [
        f"{rule['alert']}: {kind}"
        for rule in alerts(rules)
        for kind in ("fires", "silent")
        if not cases.get(rule["alert"], {}).get(kind)
    ]


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_rules", ROOT / "hack" / "monitoring_rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = load(MONITORING / "rules.yaml")
PROMTOOL_TESTS = [load(path) for path in sorted((MONITORING / "tests").glob("*.yaml"))]


def test_the_rules_hold_the_alerts_of_issue_14() -> None:
    names = {rule["alert"] for rule in alerts(RULES)}
    assert names == {
        "GPTRuntimeHighErrorRate", "GPTRuntimeHighLatency", "GPTRuntimeLowCacheHitRate", "GPTRuntimeHighCPU",
        "GPTRuntimeJobQueueBacklog", "GPTRuntimeRedisErrors", "GPTRuntimeTokenUsageHigh",
        "GPTLLMRequestsWaiting", "GPTLLMHighTimeToFirstToken", "GPTLLMKVCacheNearlyFull",
        "GPTDeploymentDegraded", "GPTDeploymentAnalysisFailed", "GPTDeploymentRolloutStuck",
        "GPTDeploymentAsleepPastWakeTime", "GPTOperatorReconcileErrors", "GPTOperatorDown",
        "GPTDeploymentNotReconciled",
    }  # fmt: skip
    assert len(names) == len(alerts(RULES))  # no name twice


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    for rule in alerts(RULES):
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL + rule["alert"].lower(), rule["alert"]
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"docs/runbook.md has no section for {rule['alert']}"


def test_every_alert_has_a_promtool_case_that_fires_it_and_one_that_does_not() -> None:
    assert untested(RULES, PROMTOOL_TESTS) == []
    stale = set(promtool_cases(PROMTOOL_TESTS)) - {rule["alert"] for rule in alerts(RULES)}
    assert stale == set(), "promtool tests name alerts the rules do not have"


def test_an_alert_without_a_silent_case_is_reported() -> None:
    """Positive control: drop every silent case of one alert, and the check names it."""
    only_firing = [
        {
            "tests": [
                {
                    **test,
                    "alert_rule_test": [
                        case
                        for case in test.get("alert_rule_test") or []
                        if case["alertname"] != "GPTRuntimeRedisErrors" or case.get("exp_alerts")
                    ],
                }
                for test in test_file["tests"]
            ]
        }
        for test_file in PROMTOOL_TESTS
    ]
    assert untested(RULES, only_firing) == ["GPTRuntimeRedisErrors: silent"]


def test_the_rules_use_only_the_contract_metric_names() -> None:
    used = {name for rule in alerts(RULES) for name in metric_names(rule["expr"])}
    assert outside_contract(used) == set()
    # every alert of the seeds' list selects what it is about
    assert {"api_requests_total", "api_request_duration_seconds_bucket", "cache_hits_total", "cache_misses_total",
            "process_cpu_seconds_total", "job_queue_depth", "redis_errors_total", "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
            "vllm:kv_cache_usage_perc", "gpt_operator_degraded", "gpt_operator_sleeping",
            "gpt_operator_wake_timestamp_seconds", "gpt_operator_reconcile_errors_total", "up",
            "gpt_operator_progressing_since_timestamp_seconds", "gpt_operator_analysis_failures_total",
            "gpt_operator_last_successful_reconcile_timestamp_seconds"} <= used  # fmt: skip


def test_a_metric_outside_the_contract_is_reported() -> None:
    """Positive control: a misspelt name, in a selector or in a __name__ matcher, is caught; functions,
    keywords, label names and durations are not taken for metrics."""
    expr = (
        'sum by (namespace, job) (rate(api_request_total{status=~"5.."}[5m])) '
        '/ sum without (le) (rate({__name__=~"cache_hits_total|cache_hit_total"}[5m])) > 0 '
        "and on (job) up offset 10m unless absent(vllm:kv_cache_usage_perc) > bool 0.9"
    )
    assert metric_names(expr) == {
        "api_request_total", "cache_hits_total", "cache_hit_total", "up", "vllm:kv_cache_usage_perc",
    }  # fmt: skip
    assert outside_contract(metric_names(expr)) == {"api_request_total", "cache_hit_total"}


def test_the_prometheus_rule_is_the_rules_file() -> None:
    """prometheusrule.yaml is generated from rules.yaml (hack/monitoring_rules.py) and up to date."""
    rules_text = (MONITORING / "rules.yaml").read_text()
    committed = (MONITORING / "prometheusrule.yaml").read_text()
    assert committed == generator().render(rules_text), "run: python hack/monitoring_rules.py"
    assert yaml.safe_load(committed)["spec"] == RULES
    # the comparison notices a change of a single threshold
    assert generator().render(rules_text.replace("> 0.01", "> 0.02")) != committed


def test_kustomize_builds_the_rule_and_the_operator_pod_monitor() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", "manifests/monitoring"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in yaml.safe_load_all(built)}
    assert set(objects) == {("PrometheusRule", "gpt-operator"), ("PodMonitor", "gpt-operator")}
    assert objects["PrometheusRule", "gpt-operator"]["spec"] == RULES
    monitor = objects["PodMonitor", "gpt-operator"]
    deployment = load(ROOT / "manifests" / "base" / "deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[monitor["spec"]["jobLabel"]] == "gpt-operator"  # the job GPTOperatorDown watches
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keeps the GPTDeployment's namespace and name labels
