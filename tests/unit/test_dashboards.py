"""The Grafana dashboards: the shipped JSON is what hack/dashboards.py writes, hack/lint_dashboards.py passes them,
each lint rule catches its fault in a broken copy (positive controls), every metric of the contract is on a
dashboard, and the kustomization makes one grafana_dashboard ConfigMap per dashboard."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "manifests" / "monitoring" / "dashboards"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


generator = _load("dashboards")
linter = _load("lint_dashboards")
SHIPPED = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "hack" / script), *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def _rules(problems: list[Any]) -> set[str]:
    return {problem.rule for problem in problems}


def test_the_shipped_dashboards_are_what_the_generator_writes_and_check_catches_an_edit(tmp_path: Path) -> None:
    assert sorted(SHIPPED) == sorted(d.file for d in generator.DASHBOARDS)
    assert _run("dashboards.py", "--check").returncode == 0
    out = tmp_path / "dashboards"
    assert _run("dashboards.py", "--out", str(out)).returncode == 0
    assert _run("dashboards.py", "--check", "--out", str(out)).returncode == 0
    edited = out / "gpt-llm-serving.json"
    edited.write_text(edited.read_text().replace("Time to first token", "TTFT"))
    result = _run("dashboards.py", "--check", "--out", str(out))
    assert result.returncode == 1 and "gpt-llm-serving.json: differs" in result.stderr, result.stderr


def test_the_linter_passes_the_shipped_dashboards() -> None:
    result = _run("lint_dashboards.py")  # against docs/metrics.md
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SHIPPED)} dashboard(s), 0 problem(s)" in result.stderr
    for name, dashboard in SHIPPED.items():
        assert linter.lint(name, dashboard, linter.CONTRACT) == [], name  # and issue 14's names


def test_the_linter_exits_1_and_names_the_file_of_a_broken_dashboard(tmp_path: Path) -> None:
    broken = copy.deepcopy(SHIPPED["gpt-api-performance.json"])
    broken["panels"][0]["targets"][0]["expr"] += ")"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = _run("lint_dashboards.py", str(path))
    assert result.returncode == 1
    assert f"{path}: target-promql-rule: panel 1 'Request rate' target A:" in result.stdout, result.stdout


def _first_target(d: dict[str, Any]) -> dict[str, Any]:
    return d["panels"][0]["targets"][0]


def _set_expr(edit: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        target = _first_target(d)
        target["expr"] = edit(target["expr"])

    return mutate


def _drop_variable(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != name]

    return mutate


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path under the first panel (`panel.`) or the dashboard's first query variable (`variable.`)."""

    def mutate(d: dict[str, Any]) -> None:
        head, *keys, last = path.split(".")
        node = d["panels"][0] if head == "panel" else d["templating"]["list"][1]
        for key in keys:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


def _duplicate_id(d: dict[str, Any]) -> None:
    d["panels"][1]["id"] = d["panels"][0]["id"]


# (rule, what is broken, how): each fault in a copy of the API performance dashboard
FAULTS = [
    ("template-datasource-rule", "no datasource variable", _drop_variable("datasource")),
    ("template-datasource-rule", "a loki variable", lambda d: d["templating"]["list"][0].update(query="loki")),
    ("template-label-promql-rule", "not label_values", _set("variable.query.query", "api_requests_total")),
    ("template-label-promql-rule", "unbalanced selector", _set("variable.query.query", "label_values(x{, job)")),
    ("panel-datasource-rule", "panel on a fixed datasource", _set("panel.datasource", {"uid": "prometheus-prod"})),
    ("panel-datasource-rule", "target on a fixed datasource", lambda d: _first_target(d).update(datasource="prod")),
    ("panel-datasource-rule", "variable on a fixed datasource", _set("variable.datasource", {"uid": "prod"})),
    ("panel-title-description-rule", "empty title", _set("panel.title", "")),
    ("panel-title-description-rule", "no description", _set("panel.description", None)),
    ("panel-id-rule", "two panels with one id", _duplicate_id),
    ("panel-units-rule", "no unit", _set("panel.fieldConfig.defaults.unit", None)),
    ("panel-units-rule", "unknown unit", _set("panel.fieldConfig.defaults.unit", "tokens")),
    ("target-promql-rule", "unbalanced parenthesis", _set_expr(lambda e: e.removesuffix(")"))),
    ("target-promql-rule", "rate of an instant vector", _set_expr(lambda e: e.replace("[$__rate_interval]", ""))),
    ("target-promql-rule", "unknown function", _set_expr(lambda e: e.replace("sum(", "summ(", 1))),
    ("target-promql-rule", "variable outside a string", _set_expr(lambda e: e.replace('"$job"', "$job"))),
    ("target-promql-rule", "no query", _set("panel.targets", [])),
    ("target-rate-interval-rule", "rate over a fixed range", _set_expr(lambda e: e.replace("$__rate_interval", "5m"))),
    ("target-job-rule", "selector without the job matcher", _set_expr(lambda e: e.replace('job=~"$job", ', ""))),
    ("target-metric-contract-rule", "metric not in the contract",
     _set_expr(lambda e: e.replace("api_requests_total", "api_requests_count_total"))),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "fault", "mutate"), FAULTS, ids=[f"{r}: {f}" for r, f, _ in FAULTS])
def test_each_rule_catches_its_fault(rule: str, fault: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    dashboard = copy.deepcopy(SHIPPED["gpt-api-performance.json"])
    assert rule not in _rules(linter.lint("clean.json", dashboard))
    mutate(dashboard)
    problems = linter.lint("broken.json", dashboard)
    assert rule in _rules(problems), (fault, [str(p) for p in problems])


def test_rate_interval_rule_covers_irate_and_increase() -> None:
    dashboard = copy.deepcopy(SHIPPED["gpt-operator-rollouts.json"])
    increases = [t for p in dashboard["panels"] for t in p["targets"] if "increase(" in t["expr"]]
    assert increases, "the rollouts dashboard counts analysis failures with increase()"
    increases[0]["expr"] = increases[0]["expr"].replace("$__rate_interval", "1h")
    assert "target-rate-interval-rule" in _rules(linter.lint("x.json", dashboard))
    target = _first_target(dashboard)
    target["expr"] = 'irate(gpt_operator_phase{job=~"$job"}[2m])'
    problems = [p for p in linter.lint("x.json", dashboard) if p.where.startswith("panel 1 ")]
    assert _rules(problems) == {"target-rate-interval-rule"}, [str(p) for p in problems]


def test_the_contract_comes_from_docs_metrics_md_when_given(tmp_path: Path) -> None:
    doc = tmp_path / "metrics.md"
    doc.write_text(
        "Not a table: `api_request_duration_seconds`.\n\n| Metric | Type | Labels |\n| --- | --- | --- |\n"
        "| `api_requests_total{method,route,status}` | counter | `route` |\n"
        "| `vllm:num_requests_running`, `x_y` | gauge |\n"
    )
    contract = linter.contract_names(doc)
    assert contract == {"api_requests_total", "vllm:num_requests_running", "x_y"}
    problems = linter.lint("x.json", SHIPPED["gpt-api-performance.json"], contract)
    assert any("metric api_request_duration_seconds_bucket is not in the contract" in str(p) for p in problems)
    assert linter.contract_names(tmp_path / "missing.md") == linter.CONTRACT


def test_every_metric_of_the_contract_is_on_a_dashboard() -> None:
    used = set()
    for dashboard in SHIPPED.values():
        for panel in linter.panels(dashboard):
            for target in panel.get("targets", []):
                for node in linter.walk(linter.parse(target["expr"])):
                    if isinstance(node, linter.Selector):
                        used.update(node.metric_names())
    missing = {m for m in linter.CONTRACT if not any(u == m or u.startswith(m + "_") for u in used)}
    assert missing == set()


def test_promtool_parses_every_query_with_the_grafana_durations_filled_in(tmp_path: Path) -> None:
    seen = tmp_path / "rules.json"
    for code in (0, 1):
        fake = tmp_path / f"promtool{code}"
        fake.write_text(f'#!/bin/sh\ncp "$3" {seen}\necho "FAILED: parse error" >&2\nexit {code}\n')
        fake.chmod(0o755)
        problems = linter.promtool_problems(str(fake), SHIPPED)
        assert (problems == []) == (code == 0)
    assert "parse error" in str(problems[0])
    rules = json.loads(seen.read_text())["groups"][0]["rules"]
    assert len(rules) == sum(len(p["targets"]) for d in SHIPPED.values() for p in linter.panels(d))
    assert all("$__" not in rule["expr"] for rule in rules)
    assert any("[5m]" in rule["expr"] for rule in rules)


def test_the_kustomization_makes_one_grafana_dashboard_configmap_per_dashboard() -> None:
    kustomization = yaml.safe_load((DASHBOARD_DIR / "kustomization.yaml").read_text())
    assert kustomization["generatorOptions"]["labels"]["grafana_dashboard"] == "1"
    files = [file for generated in kustomization["configMapGenerator"] for file in generated["files"]]
    assert sorted(files) == sorted(SHIPPED)
    names = [generated["name"] for generated in kustomization["configMapGenerator"]]
    assert len(set(names)) == len(names)


def test_every_dashboard_has_a_current_schema_and_its_own_uid() -> None:
    assert all(dashboard["schemaVersion"] >= 39 for dashboard in SHIPPED.values())  # Grafana 11 and later
    assert len({dashboard["uid"] for dashboard in SHIPPED.values()}) == len(SHIPPED)
