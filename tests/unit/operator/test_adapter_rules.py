"""manifests/monitoring/prometheus-adapter: the rules publish each runtime load signal under exactly the name the
operator's HPA asks the custom metrics API for, so `autoscaling.metrics: [{name: vllm:num_requests_waiting}]`
finds its data."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from gpt_operator.render.autoscaling import custom_metric_name

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
ADAPTER = ROOT / "manifests/monitoring/prometheus-adapter"
SIGNALS = [
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "generation_queue_depth",
    "engine_queue_depth",
    "generation_active_streams",
]


def rules() -> list[dict]:
    config_map = yaml.safe_load((ADAPTER / "configmap.yaml").read_text())
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def published_name(series: str, rule: dict) -> str | None:
    """What prometheus-adapter calls `series` under `rule`, or None when the rule does not select it."""
    selector = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
    assert selector is not None, rule["seriesQuery"]
    if not re.fullmatch(selector.group(1), series):  # Prometheus anchors =~ at both ends
        return None
    matched = re.match(rule["name"]["matches"], series)
    assert matched is not None, (series, rule["name"])
    return matched.expand(rule["name"]["as"].replace("${", r"\g<").replace("}", ">"))


@pytest.mark.parametrize("series", SIGNALS)
def test_each_signal_is_published_once_under_the_name_the_hpa_asks_for(series: str) -> None:
    names = [n for rule in rules() if (n := published_name(series, rule)) is not None]
    assert names == [custom_metric_name(series)]


def test_rules_are_per_pod_and_per_namespace() -> None:
    for rule in rules():
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert 'pod!=""' in rule["seriesQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_positive_control_a_rule_that_keeps_the_colon_is_caught() -> None:
    broken = {**rules()[0], "name": {"matches": "^(.*)$", "as": "${1}"}}
    assert published_name("vllm:num_requests_waiting", broken) != custom_metric_name("vllm:num_requests_waiting")


def test_kustomization_builds() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(ADAPTER)], capture_output=True, text=True, check=True).stdout
    (config_map,) = list(yaml.safe_load_all(out))
    assert (config_map["kind"], config_map["metadata"]["namespace"]) == ("ConfigMap", "monitoring")
