"""The Grafana dashboards of manifests/monitoring/dashboards/, described as data and written as JSON.

    .venv/bin/python hack/dashboards.py           write the JSON files
    .venv/bin/python hack/dashboards.py --check   exit 1 when a file differs from what this script writes

Every panel reads the `${datasource}` variable, every rate()/increase() uses `$__rate_interval`, every selector
filters by the dashboard's `job` variable (hack/lint_dashboards.py checks all of it), and the metric names are the
ones docs/metrics.md lists (the contract of issue 14). Runtime dashboards filter by namespace, job (one
GPTDeployment's Service) and pod; the rollouts dashboard by the operator's job and the GPTDeployments' namespace
and name (the operator's per-GPTDeployment series, scraped with honor_labels).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "manifests" / "monitoring" / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "gpt-operator"
GRID_WIDTH = 24

# label filters of every selector, by dashboard family
RUNTIME = 'namespace=~"$namespace", job=~"$job", pod=~"$pod"'
MODEL = RUNTIME + ', model_name=~"$model_name"'
OPERATOR = 'job=~"$job"'
DEPLOYMENT = 'job=~"$job", namespace=~"$namespace", name=~"$name"'
# probes and scrapes are not traffic
NOT_PROBES = 'route!~"/health|/ready|/metrics"'
REFUSED = 'event=~"login_failed|token_rejected|api_key_rejected"'
SERVER_ERRORS = NOT_PROBES + ', status=~"5.."'
CLIENT_ERRORS = NOT_PROBES + ', status=~"4.."'
REFUSED_STATUS = 'status=~"401|403|429"'
SIGNUPS_AND_LOGINS = 'event=~"signup|login"'
LOGIN_FAILED = 'event="login_failed"'
LOGIN_ATTEMPTS = 'event=~"login|login_failed"'


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel; `legend` is Grafana's legendFormat."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: kind is timeseries, stat, gauge or table (tables run instant queries, one row per series)."""

    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    min: float | None = None
    max: float | None = None
    red_above: float | None = None  # a threshold: values above it turn red
    hide_columns: tuple[str, ...] = ()  # tables: columns left out besides Time and the scrape's labels
    value_column: str = "Value"  # tables: the name of the value column


@dataclass(frozen=True)
class Variable:
    """A query variable from label_values(`selector`, `label`), multi-valued with an All option."""

    name: str
    label: str
    selector: str
    default: str = "$__all"


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: its file name (under OUT_DIR), uid, title, description, variables and panels."""

    file: str
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def rate(metric: str, labels: str, extra: str = "") -> str:
    """rate() of a counter over $__rate_interval, with the dashboard's label filters and `extra` matchers."""
    matchers = f"{labels}, {extra}" if extra else labels
    return f"rate({metric}{{{matchers}}}[$__rate_interval])"


def quantile(q: float, histogram: str, labels: str, by: str = "", extra: str = "") -> str:
    """histogram_quantile over a histogram's buckets, summed by le (and `by`)."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(histogram + '_bucket', labels, extra)}))"


def quantiles(histogram: str, labels: str, qs: Iterable[float], extra: str = "") -> tuple[Target, ...]:
    """One target per quantile, legends p50, p95, ..."""
    return tuple(Target(quantile(q, histogram, labels, extra=extra), f"p{round(q * 100)}") for q in qs)


def runtime_variables(metric: str = "api_requests_total") -> tuple[Variable, ...]:
    """namespace, job (one GPTDeployment's Service) and pod of the runtime pods that export `metric`."""
    return (
        Variable("namespace", "Namespace", metric),
        Variable("job", "Job", f'{metric}{{namespace=~"$namespace"}}'),
        Variable("pod", "Pod", f'{metric}{{namespace=~"$namespace", job=~"$job"}}'),
    )


API_PERFORMANCE = Dashboard(
    file="gpt-api-performance.json",
    uid="gpt-api-performance",
    title="GPT runtime / API performance",
    description="Request rate, errors and latency of the runtime's HTTP API (api_requests_total, "
    "api_request_duration_seconds); probes and /metrics left out.",
    variables=runtime_variables(),
    panels=(
        Panel("Request rate", "Requests per second, all routes.", "reqps",
              (Target(f"sum({rate('api_requests_total', RUNTIME, NOT_PROBES)})", "requests"),), kind="stat", width=6),
        Panel("Error share (5xx)", "Share of the requests answered with a 5xx status.", "percentunit",
              (Target(f"sum({rate('api_requests_total', RUNTIME, SERVER_ERRORS)}) / "
                      f"sum({rate('api_requests_total', RUNTIME, NOT_PROBES)})", "5xx"),),
              kind="stat", width=6, red_above=0.01),
        Panel("p95 latency", "95th percentile of the request latency, all routes.", "s",
              (Target(quantile(0.95, "api_request_duration_seconds", RUNTIME, extra=NOT_PROBES), "p95"),),
              kind="stat", width=6, red_above=0.5),
        Panel("Pods serving", "Runtime pods that served a request in the interval.", "short",
              (Target(f"count(sum by (pod) ({rate('api_requests_total', RUNTIME, NOT_PROBES)}) > 0)", "pods"),),
              kind="stat", width=6),
        Panel("Request rate by route", "Requests per second by route template.", "reqps",
              (Target(f"sum by (route) ({rate('api_requests_total', RUNTIME, NOT_PROBES)})", "{{route}}"),),
              stack=True),
        Panel("Requests by status", "Requests per second by HTTP status.", "reqps",
              (Target(f"sum by (status) ({rate('api_requests_total', RUNTIME, NOT_PROBES)})", "{{status}}"),),
              stack=True),
        Panel("Error share", "Share of the requests answered with a 5xx (server) or 4xx (client) status.",
              "percentunit",
              tuple(Target(f"sum({rate('api_requests_total', RUNTIME, errors)}) / "
                           f"sum({rate('api_requests_total', RUNTIME, NOT_PROBES)})", legend)
                    for errors, legend in ((SERVER_ERRORS, "5xx"), (CLIENT_ERRORS, "4xx"))),
              min=0, red_above=0.01),
        Panel("Latency p50 / p95 / p99", "Request latency until the response starts (streams: until they end).",
              "s", quantiles("api_request_duration_seconds", RUNTIME, (0.5, 0.95, 0.99), extra=NOT_PROBES)),
        Panel("p95 latency by route", "95th percentile of the request latency by route template.", "s",
              (Target(quantile(0.95, "api_request_duration_seconds", RUNTIME, by="route", extra=NOT_PROBES),
                      "{{route}}"),), width=24),
    ),
)

USER_ACTIVITY = Dashboard(
    file="gpt-user-activity.json",
    uid="gpt-user-activity",
    title="GPT runtime / User activity",
    description="Sign-ups, logins and resets (auth_events_total), generations by transport and finish reason, "
    "async jobs by outcome.",
    variables=runtime_variables(),
    panels=(
        Panel("Auth events", "Sign-ups, logins, refused credentials and password resets per second, by event.",
              "cps", (Target(f"sum by (event) ({rate('auth_events_total', RUNTIME)})", "{{event}}"),), stack=True),
        Panel("Sign-ups and logins", "Successful sign-ups and logins per second.", "cps",
              (Target(f"sum by (event) ({rate('auth_events_total', RUNTIME, SIGNUPS_AND_LOGINS)})",
                      "{{event}}"),)),
        Panel("Generations by transport", "Finished generations per second by transport (REST, SSE, WebSocket, "
              "OpenAI-compatible, job).", "cps",
              (Target(f"sum by (transport) ({rate('generation_requests_total', RUNTIME)})", "{{transport}}"),),
              stack=True),
        Panel("Generations by finish reason", "Finished generations per second by finish reason.", "cps",
              (Target(f"sum by (finish_reason) ({rate('generation_requests_total', RUNTIME)})",
                      "{{finish_reason}}"),), stack=True),
        Panel("Jobs by outcome", "Async jobs per second: queued, succeeded, failed.", "cps",
              (Target(f"sum by (outcome) ({rate('jobs_total', RUNTIME)})", "{{outcome}}"),)),
        Panel("Active streams", "Generations in flight, by pod.", "short",
              (Target(f"sum by (pod) (generation_active_streams{{{RUNTIME}}})", "{{pod}}"),), stack=True),
        Panel("Tokens by kind", "Prompt and completion tokens processed per second, all transports.", "short",
              (Target(f"sum by (kind) ({rate('generation_tokens_total', RUNTIME)})", "{{kind}}"),), width=24),
    ),
)

CACHE_PERFORMANCE = Dashboard(
    file="gpt-cache-performance.json",
    uid="gpt-cache-performance",
    title="GPT runtime / Cache performance",
    description="The read cache: hit rate, hits and misses by kind (cache_hits_total, cache_misses_total).",
    variables=runtime_variables(),
    panels=(
        Panel("Hit rate", "Share of the cache lookups that hit, all kinds.", "percentunit",
              (Target(f"sum({rate('cache_hits_total', RUNTIME)}) / (sum({rate('cache_hits_total', RUNTIME)}) + "
                      f"sum({rate('cache_misses_total', RUNTIME)}))", "hit rate"),),
              kind="gauge", width=6, min=0, max=1),
        Panel("Hit rate by kind", "Share of the cache lookups that hit, by kind.", "percentunit",
              (Target(f"sum by (kind) ({rate('cache_hits_total', RUNTIME)}) / (sum by (kind) "
                      f"({rate('cache_hits_total', RUNTIME)}) + sum by (kind) ({rate('cache_misses_total', RUNTIME)}))",
                      "{{kind}}"),), width=18, min=0, max=1),
        Panel("Hits by kind", "Cache hits per second by kind.", "cps",
              (Target(f"sum by (kind) ({rate('cache_hits_total', RUNTIME)})", "{{kind}}"),), stack=True),
        Panel("Misses by kind", "Cache misses per second by kind.", "cps",
              (Target(f"sum by (kind) ({rate('cache_misses_total', RUNTIME)})", "{{kind}}"),), stack=True),
    ),
)

SYSTEM_RESOURCES = Dashboard(
    file="gpt-system-resources.json",
    uid="gpt-system-resources",
    title="GPT runtime / System resources",
    description="The runtime process of each pod: CPU, resident memory, open file descriptors, active streams.",
    variables=runtime_variables("process_resident_memory_bytes"),
    panels=(
        Panel("CPU", "CPU time per second of each runtime process (1 = one core busy).", "percentunit",
              (Target(f"sum by (pod) ({rate('process_cpu_seconds_total', RUNTIME)})", "{{pod}}"),), min=0),
        Panel("Resident memory", "Resident memory of each runtime process.", "bytes",
              (Target(f"sum by (pod) (process_resident_memory_bytes{{{RUNTIME}}})", "{{pod}}"),), min=0),
        Panel("Open file descriptors", "Open file descriptors of each runtime process (sockets included).", "short",
              (Target(f"sum by (pod) (process_open_fds{{{RUNTIME}}})", "{{pod}}"),), min=0),
        Panel("Active streams", "Generations in flight, by pod.", "short",
              (Target(f"sum by (pod) (generation_active_streams{{{RUNTIME}}})", "{{pod}}"),), min=0),
    ),
)

SECURITY_EVENTS = Dashboard(
    file="gpt-security-events.json",
    uid="gpt-security-events",
    title="GPT runtime / Security events",
    description="Refused credentials (auth_events_total), requests refused by a limit (rate_limit_exceeded_total) "
    "and 401/403/429 responses.",
    variables=runtime_variables(),
    panels=(
        Panel("Refused credentials", "Failed logins, rejected tokens and rejected API keys per second.", "cps",
              (Target(f"sum by (event) ({rate('auth_events_total', RUNTIME, REFUSED)})", "{{event}}"),), stack=True),
        Panel("Failed login share", "Share of the login attempts that failed.", "percentunit",
              (Target(f"sum({rate('auth_events_total', RUNTIME, LOGIN_FAILED)}) / "
                      f"sum({rate('auth_events_total', RUNTIME, LOGIN_ATTEMPTS)})", "failed"),),
              min=0, max=1, red_above=0.2),
        Panel("Rate limits exceeded", "Requests refused by a limit per second, by the limit's type.", "cps",
              (Target(f"sum by (type) ({rate('rate_limit_exceeded_total', RUNTIME)})", "{{type}}"),), stack=True),
        Panel("401 / 403 / 429 responses", "Unauthorized, forbidden and too-many-requests responses per second.",
              "reqps", (Target(f"sum by (status) ({rate('api_requests_total', RUNTIME, REFUSED_STATUS)})",
                               "{{status}}"),), stack=True),
        Panel("401 / 403 / 429 by route", "Refused requests per second by route and status.", "reqps",
              (Target(f"sum by (route, status) ({rate('api_requests_total', RUNTIME, REFUSED_STATUS)})",
                      "{{route}} {{status}}"),), width=24),
    ),
)

LLM_SERVING = Dashboard(
    file="gpt-llm-serving.json",
    uid="gpt-llm-serving",
    title="GPT runtime / LLM serving",
    description="The engine, with vLLM's series and meanings: time to first token, inter-token latency, "
    "end-to-end latency, token throughput, running and waiting requests, KV cache, batch size; the job queue "
    "and Redis errors.",
    variables=(
        *runtime_variables("vllm:num_requests_running"),
        Variable("model_name", "Model", 'vllm:num_requests_running{namespace=~"$namespace", job=~"$job"}'),
    ),
    panels=(
        Panel("Time to first token p50 / p95", "From a request's arrival to its first token.", "s",
              quantiles("vllm:time_to_first_token_seconds", MODEL, (0.5, 0.95)), width=8),
        Panel("Inter-token latency p50 / p95", "Between consecutive tokens of one stream.", "s",
              quantiles("vllm:inter_token_latency_seconds", MODEL, (0.5, 0.95)), width=8),
        Panel("End-to-end latency p50 / p95 / p99", "From a request's arrival to its end.", "s",
              quantiles("vllm:e2e_request_latency_seconds", MODEL, (0.5, 0.95, 0.99)), width=8),
        Panel("Tokens per second", "Prompt tokens processed and tokens generated per second.", "short",
              (Target(f"sum({rate('vllm:prompt_tokens_total', MODEL)})", "prompt"),
               Target(f"sum({rate('vllm:generation_tokens_total', MODEL)})", "generation"))),
        Panel("Requests running and waiting", "Requests generating now and requests waiting for a slot (the "
              "engine's queue and the runtime's admission queue).", "short",
              (Target(f"sum(vllm:num_requests_running{{{MODEL}}})", "running"),
               Target(f"sum(vllm:num_requests_waiting{{{MODEL}}})", "waiting"))),
        Panel("KV cache usage", "Fraction of each pod's KV-cache budget in use.", "percentunit",
              (Target(f"max by (pod) (vllm:kv_cache_usage_perc{{{MODEL}}})", "{{pod}}"),),
              min=0, max=1, red_above=0.9),
        Panel("Batch size", "Requests in each engine's running batch (engine_running), and waiting inside it.",
              "short", (Target(f"sum by (pod) (engine_running{{{RUNTIME}}})", "{{pod}} running"),
                        Target(f"sum by (pod) (engine_queue_depth{{{RUNTIME}}})", "{{pod}} waiting"))),
        Panel("Job queue depth", "Async jobs waiting in the job queue (every pod reads the same queue).", "short",
              (Target(f"max(job_queue_depth{{{RUNTIME}}})", "jobs waiting"),), width=8, min=0),
        Panel("Admission queue", "Generations holding an engine slot and waiting for one, all pods.", "short",
              (Target(f"sum(generation_running{{{RUNTIME}}})", "running"),
               Target(f"sum(generation_queue_depth{{{RUNTIME}}})", "waiting")), width=8, min=0),
        Panel("Redis errors", "Failed Redis calls per second (refused, timed out), by backend.", "cps",
              (Target(f"sum by (backend) ({rate('redis_errors_total', RUNTIME)})", "{{backend}}"),),
              width=8, min=0, red_above=0),
    ),
)

# columns of the rollouts tables that say nothing about a GPTDeployment
_SCRAPE_COLUMNS = ("__name__", "job", "instance", "pod", "container", "endpoint", "service")

ROLLOUTS = Dashboard(
    file="gpt-operator-rollouts.json",
    uid="gpt-operator-rollouts",
    title="GPT operator / Rollouts",
    description="GPTDeployments as the operator sees them: phase, Degraded and its reason, canary analysis "
    "failures, running rollouts, sleep schedules; and the operator's reconciles.",
    variables=(
        Variable("job", "Operator job", "gpt_operator_reconcile_total"),
        Variable("namespace", "Namespace", 'gpt_operator_phase{job=~"$job"}'),
        Variable("name", "GPTDeployment", 'gpt_operator_phase{job=~"$job", namespace=~"$namespace"}'),
    ),
    panels=(
        Panel("Phase", "The current status.phase of each GPTDeployment.", "none",
              (Target(f"gpt_operator_phase{{{DEPLOYMENT}}} == 1"),), kind="table", hide_columns=("Value",)),
        Panel("Degraded", "GPTDeployments whose Degraded condition is True, with its reason.", "none",
              (Target(f"gpt_operator_degraded{{{DEPLOYMENT}}} == 1"),), kind="table", hide_columns=("Value",)),
        Panel("GPTDeployments by phase", "How many GPTDeployments are in each phase.", "short",
              (Target(f"count by (phase) (gpt_operator_phase{{{DEPLOYMENT}}} == 1)", "{{phase}}"),), stack=True),
        Panel("Degraded by reason", "How many GPTDeployments are Degraded, by reason.", "short",
              (Target(f"count by (reason) (gpt_operator_degraded{{{DEPLOYMENT}}} == 1)", "{{reason}}"),),
              stack=True, min=0),
        Panel("Canary analysis failures", "Canary analysis runs that failed in the interval, by GPTDeployment.",
              "short", (Target(f"sum by (namespace, name) (increase(gpt_operator_analysis_failures_total"
                               f"{{{DEPLOYMENT}}}[$__rate_interval]))", "{{namespace}}/{{name}}"),), min=0),
        Panel("Rollouts in progress", "How long each running rollout has been going.", "dtdurations",
              (Target(f"time() - gpt_operator_progressing_since_timestamp_seconds{{{DEPLOYMENT}}}"),),
              kind="table", value_column="Running for"),
        Panel("Sleeping", "GPTDeployments asleep by their schedule now.", "none",
              (Target(f"gpt_operator_sleeping{{{DEPLOYMENT}}} == 1"),), kind="table", hide_columns=("Value",)),
        Panel("Next wake", "When each sleeping GPTDeployment wakes next.", "dateTimeAsIso",
              (Target(f"gpt_operator_wake_timestamp_seconds{{{DEPLOYMENT}}} * 1000"),),
              kind="table", value_column="Wakes at"),
        Panel("Reconciles", "Reconciles per second by outcome.", "ops",
              (Target(f"sum by (outcome) ({rate('gpt_operator_reconcile_total', OPERATOR)})", "{{outcome}}"),),
              stack=True, width=8),
        Panel("Reconcile errors", "Failed reconciles per second by reason.", "ops",
              (Target(f"sum by (reason) ({rate('gpt_operator_reconcile_errors_total', OPERATOR)})", "{{reason}}"),),
              stack=True, width=8, min=0),
        Panel("Reconcile duration p50 / p95 / p99", "How long one reconcile takes.", "s",
              quantiles("gpt_operator_reconcile_duration_seconds", OPERATOR, (0.5, 0.95, 0.99)), width=8),
        Panel("Last successful reconcile age", "Time since each GPTDeployment's last successful reconcile.", "s",
              (Target(f"time() - gpt_operator_last_successful_reconcile_timestamp_seconds{{{DEPLOYMENT}}}",
                      "{{namespace}}/{{name}}"),), width=24, min=0, red_above=900),
    ),
)

# Grafana's built-in annotations, and a menu of the other dashboards (keeping the time range and variables)
ANNOTATIONS = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}
LINKS = {"title": "GPT dashboards", "type": "dashboards", "tags": [TAG], "asDropdown": True, "includeVars": True,
         "keepTime": True}  # fmt: skip

DASHBOARDS = (API_PERFORMANCE, USER_ACTIVITY, CACHE_PERFORMANCE, SYSTEM_RESOURCES, SECURITY_EVENTS, LLM_SERVING,
              ROLLOUTS)  # fmt: skip


def _thresholds(red_above: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {"mode": "absolute", "steps": steps}


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel.red_above)}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "off" if panel.red_above is None else "line"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "stat":
        return {"reduceOptions": reduce, "colorMode": "value", "graphMode": "area", "textMode": "auto",
                "orientation": "auto", "justifyMode": "auto"}  # fmt: skip
    if panel.kind == "gauge":
        return {"reduceOptions": reduce, "showThresholdLabels": False, "showThresholdMarkers": True}
    if panel.kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    raise ValueError(f"unknown panel kind {panel.kind!r}")


def _target(target: Target, ref: str, table: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "editorMode": "code", "expr": target.expr}
    if table:
        out |= {"format": "table", "instant": True, "range": False}
    else:
        out |= {"legendFormat": target.legend or "__auto", "instant": False, "range": True}
    return out


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    table = panel.kind == "table"
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
        "targets": [_target(t, chr(ord("A") + i), table) for i, t in enumerate(panel.targets)],
    }
    if table:
        hidden = {column: True for column in ("Time", *_SCRAPE_COLUMNS, *panel.hide_columns)}
        renamed = {} if panel.value_column == "Value" else {"Value": panel.value_column}
        out["transformations"] = [
            {"id": "organize", "options": {"excludeByName": hidden, "indexByName": {}, "renameByName": renamed}}
        ]
    return out


def _variable_json(variable: Variable) -> dict[str, Any]:
    query = f"label_values({variable.selector}, {variable.name})"
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": [variable.default]},
        "options": [],
        "hide": 0,
    }


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "current": {},
        "options": [],
        "refresh": 1,
        "hide": 0,
        "includeAll": False,
        "multi": False,
    }


def _layout(panels: Iterable[Panel]) -> Iterable[tuple[Panel, int, int]]:
    """Left to right, top to bottom: a panel that does not fit the row's width starts the next row."""
    x = y = row_height = 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        yield panel, x, y
        x += panel.width
        row_height = max(row_height, panel.height)


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (panel ids 1, 2, ... in layout order)."""
    panels = [_panel_json(p, i, x, y) for i, (p, x, y) in enumerate(_layout(dashboard.panels), start=1)]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "weekStart": "",
        "annotations": {"list": [ANNOTATIONS]},
        "links": [LINKS],
        "templating": {"list": [_datasource_variable(), *(_variable_json(v) for v in dashboard.variables)]},
        "panels": panels,
    }


def render(dashboard: Dashboard) -> str:
    """The file's text: the JSON model, indented, with a final newline."""
    return json.dumps(dashboard_json(dashboard), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a file differs from what would be written")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="the dashboards' folder")
    args = parser.parse_args(argv)
    stale = []
    for dashboard in DASHBOARDS:
        path = args.out / dashboard.file
        text = render(dashboard)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path}: differs from hack/dashboards.py's output; run .venv/bin/python hack/dashboards.py",
              file=sys.stderr)  # fmt: skip
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
