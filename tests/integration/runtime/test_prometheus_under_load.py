"""A real Prometheus scraping a real runtime under a Locust load: every dashboard panel of
manifests/monitoring/dashboards and every alert of manifests/monitoring/rules.yaml (without its threshold) returns
data, or EXPECTED_EMPTY says why it cannot here. `pytest -s` prints the table, panel by panel.

The runtime runs as users run it locally: the embedded backends (SQLite store and queue, in-process job worker,
in-memory cache and limits), here on the fake engine (10 ms per token) with limits and quotas off.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .conftest import RuntimeServer, start_runtime, stop_runtime
from .panel_queries import Query, fill_variables, shipped_queries, without_threshold
from .prometheus import ROOT, Prometheus, series_with_data, start_prometheus, stop_prometheus

MONITORING = ROOT / "manifests" / "monitoring"
LOAD_SECONDS = 30
USERS = 4

# (pattern in the query, why such a query has no data in this test); the first match applies
EXPECTED_EMPTY: tuple[tuple[str, str], ...] = (
    (r"gpt_operator_", "no operator runs in this test: the operator's own series"),
    (r"redis_errors_total", "no Redis here (embedded backends): no Redis call can fail"),
    (r'status=~"5\.\."', "no 5xx under this load (the Locust run fails on any failed request)"),
    (r"rate_limit_exceeded_total", "limits and quotas are off here (0), so no request is refused"),
)


@dataclass
class Loaded:
    runtime: RuntimeServer
    prometheus: Prometheus
    start: float
    end: float


@dataclass(frozen=True)
class Row:
    query: Query
    series: int
    verdict: str  # "data", "empty: <reason>", or a fault: "UNEXPLAINED EMPTY", "STALE: ..."

    @property
    def fault(self) -> bool:
        return self.verdict.startswith(("UNEXPLAINED", "STALE"))


def judge(query: Query, series: int, expected_empty: tuple[tuple[str, str], ...] = EXPECTED_EMPTY) -> Row:
    """Data, or an explained empty; an empty query nobody explained, or an explained one that has data, is a fault."""
    reason = next((why for pattern, why in expected_empty if re.search(pattern, query.expr)), None)
    if series and reason:
        return Row(query, series, f"STALE: has data, but the table says empty ({reason})")
    if series:
        return Row(query, series, "data")
    return Row(query, series, f"empty: {reason}" if reason else "UNEXPLAINED EMPTY")


def evaluate(loaded: Loaded, query: Query, expected_empty: tuple[tuple[str, str], ...] = EXPECTED_EMPTY) -> Row:
    matrix = loaded.prometheus.query_range(query.expr, loaded.start, loaded.end)
    return judge(query, series_with_data(matrix), expected_empty)


def table(rows: list[Row]) -> str:
    lines = [f"{'source':<26} {'panel / alert':<44} {'series':>6}  verdict", "-" * 110]
    for row in rows:
        lines.append(f"{row.query.source[:26]:<26} {row.query.title[:44]:<44} {row.series:>6}  {row.verdict}")
        lines.append(f"{'':<26}   {' '.join(row.query.expr.split())[:200]}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """Runtime + Prometheus (1 s scrapes and rule evaluations), then a bounded Locust run of hack/locustfile.py."""
    tmp = tmp_path_factory.mktemp("prometheus-under-load")
    runtime = start_runtime(
        tmp / "runtime",
        GPT_MODEL_SOURCE="fake:echo?delay_ms=10",
        GPT_RATE_LIMIT_FREE="0",
        GPT_RATE_LIMIT_ANONYMOUS="0",
        GPT_QUOTA_FREE="0,0,0,0",
        GPT_LOG_LEVEL="warning",
    )
    rules = MONITORING / "rules.yaml"
    host_port = runtime.base_url.removeprefix("http://")
    # the labels a ServiceMonitor's scrape gives a runtime pod in Kubernetes
    target = {"targets": [host_port], "labels": {"namespace": "load-test", "pod": "gpt-runtime-0"}}
    prometheus = start_prometheus(tmp / "prometheus", {"gpt-runtime": target}, [rules] if rules.exists() else [])
    try:
        deadline = time.monotonic() + 20
        while set(prometheus.targets_up().values()) != {"up"}:  # a first sample before the load: rates need two
            assert time.monotonic() < deadline, f"targets not up: {prometheus.targets_up()}"
            time.sleep(0.2)
        start = time.time()
        locust = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "hack" / "locustfile.py"), "--host", runtime.base_url,
             "--headless", "-u", str(USERS), "-r", str(USERS), "--run-time", f"{LOAD_SECONDS}s", "--only-summary"],
            capture_output=True, text=True, timeout=LOAD_SECONDS + 60,
        )  # fmt: skip
        assert locust.returncode == 0, f"the load test failed:\n{locust.stdout[-6000:]}\n{locust.stderr[-6000:]}"
        time.sleep(3)  # the last scrapes and rule evaluations
        yield Loaded(runtime, prometheus, start, time.time())
    finally:
        stop_prometheus(prometheus)
        stop_runtime(runtime)


@pytest.mark.integration
def test_every_dashboard_panel_and_alert_has_data_under_load_or_a_reason(loaded: Loaded) -> None:
    queries = shipped_queries(MONITORING)
    assert any(q.source != "alert rules" for q in queries), "no dashboard in manifests/monitoring/dashboards"
    rows = [evaluate(loaded, query) for query in queries]
    print(f"\n{len(rows)} queries over {loaded.end - loaded.start:.0f} s of load\n{table(rows)}")
    faults = [row for row in rows if row.fault]
    assert not faults, f"{len(faults)} panels or alerts without data and without a reason:\n{table(faults)}"
    assert sum(row.verdict == "data" for row in rows) > len(rows) / 2  # the load reached most of them


@pytest.mark.integration
def test_the_alert_rules_load_and_evaluate_without_errors(loaded: Loaded) -> None:
    """Prometheus loaded rules.yaml (it would not start on a bad file) and evaluated every rule without an error."""
    assert (MONITORING / "rules.yaml").exists()
    rules = loaded.prometheus.rules()
    assert rules, "no rule loaded"
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken


@pytest.mark.integration
def test_the_judge_catches_a_misspelled_metric_and_a_stale_reason(loaded: Loaded) -> None:
    """Positive controls: a panel on a metric nobody exports, and a reason that claims a live panel is empty."""
    typo = Query("control", "misspelled", fill_variables('sum(rate(api_request_total{job=~"$job"}[$__rate_interval]))'))
    assert evaluate(loaded, typo).verdict == "UNEXPLAINED EMPTY"
    live = Query("control", "request rate", 'sum(rate(api_requests_total{route="/generate"}[15s]))')
    assert evaluate(loaded, live).verdict == "data"
    stale = evaluate(loaded, live, ((r"api_requests_total", "claimed empty"),))
    assert stale.fault and stale.verdict.startswith("STALE")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("expr", "measured"),
    [
        ("vllm:kv_cache_usage_perc > 0.9", "vllm:kv_cache_usage_perc"),
        ("sum by (job) (rate(x[5m])) > bool 3", "sum by (job) (rate(x[5m]))"),
        ("(\n  1 - a / b\n) < 0.6\nand sum(b) > 0.1", "1 - a / b"),
        ('max(x{reason="a>b"}) == 1 or time() - y > 4 * 3600', 'max(x{reason="a>b"})'),
        ("4 * 3600 < time() - y  # a comment > 2", "time() - y"),
        ('absent(up{job="gpt-operator"} == 1)', 'absent(up{job="gpt-operator"} == 1)'),
        ("rate(cpu[5m]) > 0.85 and on (job) queue", "rate(cpu[5m])"),
    ],
)
def test_an_alert_is_measured_without_its_threshold(expr: str, measured: str) -> None:
    assert without_threshold(expr) == measured


@pytest.mark.unit
def test_grafana_variables_become_match_all_and_intervals_durations() -> None:
    expr = 'rate(x{namespace=~"$namespace", pod=~"${pod:regex}", job=~"[[job]]"}[$__rate_interval])'
    assert fill_variables(expr) == 'rate(x{namespace=~".*", pod=~".*", job=~".*"}[15s])'


@pytest.mark.unit
def test_a_query_nobody_explains_is_a_fault_and_an_explained_one_is_not() -> None:
    assert judge(Query("d", "p", "sum(nothing_total)"), 0).fault
    assert not judge(Query("d", "p", "gpt_operator_phase == 1"), 0).fault
    assert judge(Query("d", "p", "gpt_operator_phase == 1"), 2).fault  # a reason that no longer holds
    assert judge(Query("d", "p", "sum(up)"), 1).verdict == "data"
