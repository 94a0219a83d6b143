"""Lint Grafana dashboards the way grafana/dashboard-linter does, for the rules that matter here.

    .venv/bin/python hack/lint_dashboards.py [--promtool PATH] [--contract docs/metrics.md] [DASHBOARD.json ...]

Without files it lints manifests/monitoring/dashboards/*.json; it prints one line per problem and exits 1 when
there is any. The rules (dashboard-linter's names where it has the rule):

- template-datasource-rule: a `datasource` variable of type datasource and query prometheus.
- template-label-promql-rule: every query variable is label_values(<selector>, <label>) on the datasource variable,
  and its selector parses.
- panel-datasource-rule: every panel and every target uses the datasource variable.
- panel-title-description-rule: every panel has a title and a description.
- panel-id-rule: panel ids are unique within a dashboard.
- panel-units-rule: every panel that shows numbers (timeseries, stat, gauge, bargauge, table) has a known unit.
- target-promql-rule: every target's expression parses as PromQL (this module's parser, typed: rate() wants a range
  vector, sum() an instant vector, ...; with --promtool also Prometheus' own parser, `promtool check rules`).
- target-rate-interval-rule: rate, irate and increase take `[$__rate_interval]`.
- target-job-rule: where the dashboard has a `job` variable, every selector has the matcher job=~"$job".
- target-metric-contract-rule: every metric a query or variable reads is in the contract: the names in the Metric
  column of docs/metrics.md's tables when it exists, else CONTRACT below (issue 14's list); a histogram's
  _bucket/_sum/_count and a counter's _total count as its name.

grafana/dashboard-linter itself is not installable here (the Go module proxy lists no version of it).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "manifests" / "monitoring" / "dashboards"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# issue 14's metric names, the contract while docs/metrics.md does not exist
CONTRACT = frozenset({
    "api_requests_total", "api_request_duration_seconds", "generation_tokens_total", "generation_requests_total",
    "cache_hits_total", "cache_misses_total", "rate_limit_exceeded_total", "generation_queue_depth",
    "generation_running", "engine_queue_depth", "engine_running", "jobs_total", "generation_active_streams",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "auth_events_total", "redis_errors_total",
    "job_queue_depth", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    "gpt_operator_reconcile_total", "gpt_operator_reconcile_errors_total", "gpt_operator_reconcile_duration_seconds",
    "gpt_operator_phase", "gpt_operator_degraded", "gpt_operator_analysis_failures_total",
    "gpt_operator_progressing_since_timestamp_seconds", "gpt_operator_sleeping", "gpt_operator_wake_timestamp_seconds",
    "gpt_operator_last_successful_reconcile_timestamp_seconds",
})  # fmt: skip
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_total")

# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts), the ones a service dashboard uses
UNITS = frozenset({
    "none", "string", "short", "percent", "percentunit", "sci", "locale", "hex", "hex0x",
    "bytes", "decbytes", "bits", "decbits", "kbytes", "deckbytes", "mbytes", "decmbytes", "gbytes", "decgbytes",
    "Bps", "binBps", "bps", "binbps", "KiBs", "KBs", "MiBs", "MBs", "GiBs", "GBs", "pps",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms", "clockms", "clocks",
    "hertz", "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsLocal",
    "dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm", "bool", "bool_yes_no", "bool_on_off",
    "celsius", "watt", "kwatt", "joule", "flops", "gflops", "tflops",
})  # fmt: skip
CUSTOM_UNIT_PREFIXES = ("suffix:", "prefix:", "si:", "count:", "time:", "currency:")
UNIT_PANELS = frozenset({"timeseries", "graph", "stat", "singlestat", "gauge", "bargauge", "table", "barchart"})
NO_QUERY_PANELS = frozenset({"row", "text", "news", "dashlist", "alertlist", "annolist"})
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
DATASOURCE_REFS = frozenset({"$datasource", "${datasource}"})
# Grafana's global variables that stand for a duration
DURATION_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


class PromQLError(ValueError):
    """An expression that does not parse (or is mistyped), with the offset of the fault."""


# --- PromQL: tokens --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+|\$(?:\{__[a-z_]+\}|__[a-z_]+))
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|nan)\b)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
    |(?P<ident>:?[a-zA-Z_][a-zA-Z0-9_:]*)
    |(?P<variable>\$\{?\w+\}?|\[\[\w+\]\])
    |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,(){}\[\]:@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # duration, number, string, ident, op, end
    text: str
    pos: int


def tokens(expr: str) -> list[Token]:
    """The tokens of `expr`; a Grafana variable outside a string is an error (it would not parse once substituted)."""
    out = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos}")
        kind = match.lastgroup or ""
        if kind == "variable":
            raise PromQLError(f"variable {match.group()} outside a string at {pos}")
        if kind == "duration" and match.group().startswith("$"):
            name = match.group().strip("${}")
            if name not in DURATION_VARIABLES:
                raise PromQLError(f"unknown Grafana variable {match.group()} at {pos}")
        if kind != "space":
            out.append(Token(kind, match.group(), pos))
        pos = match.end()
    out.append(Token("end", "", len(expr)))
    return out


# --- PromQL: syntax tree ---------------------------------------------------------------------------------------------


@dataclass
class Node:
    type: str  # vector, matrix, scalar, string

    def children(self) -> list[Node]:
        return []


@dataclass
class Selector(Node):
    name: str | None = None
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value) of {label op "value"}

    def metric_names(self) -> list[str]:
        """The metric name, or the names a `__name__` matcher lists (an alternation of plain names)."""
        if self.name:
            return [self.name]
        for label, op, value in self.matchers:
            if label == "__name__" and op in ("=", "=~") and re.fullmatch(r"[a-zA-Z0-9_:|]+", value):
                return value.split("|")
        return []


@dataclass
class Range(Node):
    """`inner[range]` (a matrix selector) or `inner[range:step]` (a subquery); `range` is as written."""

    inner: Node | None = None
    range: str = ""

    def children(self) -> list[Node]:
        return [self.inner] if self.inner else []


@dataclass
class Call(Node):
    func: str = ""
    args: list[Node] = field(default_factory=list)

    def children(self) -> list[Node]:
        return self.args


@dataclass
class Other(Node):
    """Every other node (aggregations, operators, literals): only its children matter to the rules."""

    parts: list[Node] = field(default_factory=list)

    def children(self) -> list[Node]:
        return self.parts


def walk(node: Node) -> Iterator[Node]:
    """`node` and every node under it."""
    yield node
    for child in node.children():
        yield from walk(child)


# function: (argument types, how many trailing ones are optional, result type); "*" repeats the last type
V, M, S, T = "vector", "matrix", "scalar", "string"
_MATH = ("abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt", "sgn", "absent", "timestamp", "sort",
         "sort_desc", "deg", "rad", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh",
         "tan", "tanh", "histogram_avg", "histogram_count", "histogram_sum", "histogram_stddev", "histogram_stdvar")
_CALENDAR = ("day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year")
_OVER_TIME = ("avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
              "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "mad_over_time",
              "absent_over_time", "rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets")
FUNCTIONS: dict[str, tuple[tuple[str, ...], int, str]] = {
    **{name: ((V,), 0, V) for name in _MATH},
    **{name: ((V,), 1, V) for name in _CALENDAR},
    **{name: ((M,), 0, V) for name in _OVER_TIME},
    "quantile_over_time": ((S, M), 0, V),
    "predict_linear": ((M, S), 0, V),
    "holt_winters": ((M, S, S), 0, V),
    "double_exponential_smoothing": ((M, S, S), 0, V),
    "histogram_quantile": ((S, V), 0, V),
    "histogram_fraction": ((S, S, V), 0, V),
    "round": ((V, S), 1, V),
    "clamp": ((V, S, S), 0, V),
    "clamp_max": ((V, S), 0, V),
    "clamp_min": ((V, S), 0, V),
    "label_replace": ((V, T, T, T, T), 0, V),
    "label_join": ((V, T, T, T, "*"), 1, V),
    "sort_by_label": ((V, T, "*"), 1, V),
    "sort_by_label_desc": ((V, T, "*"), 1, V),
    "scalar": ((V,), 0, S),
    "vector": ((S,), 0, V),
    "time": ((), 0, S),
    "pi": ((), 0, S),
}  # fmt: skip
AGGREGATIONS = {"sum": None, "avg": None, "count": None, "min": None, "max": None, "group": None, "stddev": None,
                "stdvar": None, "topk": S, "bottomk": S, "quantile": S, "count_values": T, "limitk": S,
                "limit_ratio": S}  # fmt: skip
# binary operators by precedence, lowest first; ^ is right-associative
PRECEDENCE = (("or",), ("and", "unless"), ("==", "!=", "<=", "<", ">=", ">"), ("+", "-"), ("*", "/", "%", "atan2"),
              ("^",))  # fmt: skip
COMPARISONS = frozenset(PRECEDENCE[2])
SET_OPERATORS = frozenset({"or", "and", "unless"})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"})


class Parser:
    """A recursive-descent PromQL parser that also infers each node's type (the checks promtool's parser makes)."""

    def __init__(self, expr: str):
        self.tokens = tokens(expr)
        self.i = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def fail(self, message: str) -> PromQLError:
        return PromQLError(f"{message} at {self.token.pos} (near {self.token.text or 'the end'!r})")

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.token
        if (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            raise self.fail(f"expected {text or kind}")
        self.i += 1
        return token

    def peek(self, *texts: str) -> bool:
        return self.token.text in texts and self.token.kind in ("op", "ident")

    def parse(self) -> Node:
        node = self.binary(0)
        if self.token.kind != "end":
            raise self.fail("unexpected token")
        return node

    def binary(self, level: int) -> Node:
        if level == len(PRECEDENCE):
            return self.unary()
        lhs = self.binary(level + 1)
        while self.peek(*PRECEDENCE[level]):
            op = self.take().text
            returns_bool = False
            if self.peek("bool"):
                if op not in COMPARISONS:
                    raise self.fail("bool modifier on a non-comparison")
                self.take()
                returns_bool = True
            if self.peek("on", "ignoring"):
                self.take()
                self.labels()
                if self.peek("group_left", "group_right"):
                    self.take()
                    if self.peek("("):
                        self.labels()
            rhs = self.binary(level if op == "^" else level + 1)
            lhs = Other(self.binary_type(op, lhs, rhs, returns_bool), [lhs, rhs])
        return lhs

    def binary_type(self, op: str, lhs: Node, rhs: Node, returns_bool: bool) -> str:
        for side in (lhs, rhs):
            if side.type not in (V, S):
                raise self.fail(f"operator {op} on a {side.type}")
        if op in SET_OPERATORS and (lhs.type, rhs.type) != (V, V):
            raise self.fail(f"set operator {op} needs instant vectors on both sides")
        if op in COMPARISONS and lhs.type == rhs.type == S and not returns_bool:
            raise self.fail("a comparison of two scalars needs bool")
        return V if V in (lhs.type, rhs.type) else S

    def unary(self) -> Node:
        if self.peek("-", "+"):
            self.take()
            node = self.unary()
            if node.type not in (V, S):
                raise self.fail(f"unary minus on a {node.type}")
            return Other(node.type, [node])
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek("["):
                self.take()
                range_ = self.take(kind="duration").text
                if self.peek(":"):
                    self.take()
                    if self.token.kind == "duration":
                        self.take()
                    if node.type != V:
                        raise self.fail(f"subquery of a {node.type}")
                elif not isinstance(node, Selector):
                    raise self.fail("a range needs a selector (or a subquery, [range:step])")
                self.take("]")
                node = Range(M, node, range_)
            elif self.peek("offset"):
                self.take()
                self.take(kind="duration")
            elif self.peek("@"):
                self.take()
                if self.peek("start", "end"):
                    self.take()
                    self.take("(")
                    self.take(")")
                else:
                    self.take(kind="number")
            else:
                return node

    def primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.take()
            return Other(S)
        if token.kind == "string":
            self.take()
            return Other(T)
        if self.peek("("):
            self.take()
            node = self.binary(0)
            self.take(")")
            return node
        if self.peek("{"):
            return self.selector(None)
        if token.kind != "ident":
            raise self.fail("expected an expression")
        name = self.take().text
        if name in AGGREGATIONS and (self.peek("(", "by", "without")):
            return self.aggregation(name)
        if self.peek("("):
            return self.call(name)
        if name in KEYWORDS or name in ("and", "or", "unless", "atan2"):
            raise self.fail(f"keyword {name} where an expression belongs")
        return self.selector(name)

    def labels(self) -> list[str]:
        self.take("(")
        names = []
        while not self.peek(")"):
            names.append(self.take(kind="ident").text)
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return names

    def aggregation(self, op: str) -> Node:
        if self.peek("by", "without"):
            self.take()
            self.labels()
        self.take("(")
        parts = []
        param_type = AGGREGATIONS[op]
        if param_type is not None:
            param = self.binary(0)
            if param.type != param_type:
                raise self.fail(f"{op}'s parameter must be a {param_type}")
            parts.append(param)
            self.take(",")
        inner = self.binary(0)
        if inner.type != V:
            raise self.fail(f"{op}() needs an instant vector, got a {inner.type}")
        parts.append(inner)
        self.take(")")
        if self.peek("by", "without"):
            self.take()
            self.labels()
        return Other(V, parts)

    def call(self, func: str) -> Node:
        if func not in FUNCTIONS:
            raise self.fail(f"unknown function {func}")
        wanted, optional, result = FUNCTIONS[func]
        self.take("(")
        args: list[Node] = []
        while not self.peek(")"):
            args.append(self.binary(0))
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        variadic = bool(wanted) and wanted[-1] == "*"
        fixed = wanted[:-1] if variadic else wanted
        if len(args) < len(fixed) - optional or (not variadic and len(args) > len(fixed)):
            raise self.fail(f"{func}() takes {len(fixed)} argument(s), got {len(args)}")
        for n, arg in enumerate(args):
            expected = fixed[min(n, len(fixed) - 1)]
            if arg.type != expected:
                raise self.fail(f"{func}()'s argument {n + 1} must be a {expected}, got a {arg.type}")
        return Call(result, func, args)

    def selector(self, name: str | None) -> Selector:
        matchers = []
        if self.peek("{"):
            self.take()
            while not self.peek("}"):
                if self.token.kind not in ("ident", "string"):
                    raise self.fail("expected a label name")
                label = self.take().text
                op = self.take().text
                if op not in ("=", "!=", "=~", "!~"):
                    raise self.fail(f"unknown matcher operator {op}")
                value = self.take(kind="string").text
                matchers.append((label.strip("\"'"), op, _unquote(value)))
                if not self.peek("}"):
                    self.take(",")
            self.take("}")
        if name is None and not any(op in ("=", "=~") and value not in ("", ".*") for _, op, value in matchers):
            raise self.fail("a selector without a name needs a matcher that does not match the empty string")
        return Selector(V, name, matchers)


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse(expr: str) -> Node:
    """The syntax tree of a PromQL expression; PromQLError when it does not parse or is mistyped."""
    return Parser(expr).parse()


# --- the dashboards --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule}: {self.where}: {self.message}"


def contract_names(doc: Path = METRICS_DOC) -> frozenset[str]:
    """The metric names of the contract: those in backticks in the first column of `doc`'s tables (the Metric
    column) when it exists, else CONTRACT."""
    if not doc.exists():
        return CONTRACT
    first_cells = [line.split("|")[1] for line in doc.read_text().splitlines() if line.startswith("|")]
    return frozenset(name for cell in first_cells for name in re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)[`{]", cell))


def in_contract(metric: str, contract: frozenset[str]) -> bool:
    """Whether `metric` is a contract series (a histogram's _bucket/_sum/_count, a counter's _total included)."""
    return metric in contract or any(metric.endswith(s) and metric.removesuffix(s) in contract for s in SERIES_SUFFIXES)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _datasource_uid(ref: Any) -> str:
    return str(ref.get("uid", "")) if isinstance(ref, dict) else str(ref or "")


class Linter:
    """The problems of one dashboard file."""

    def __init__(self, file: str, dashboard: dict[str, Any], contract: frozenset[str]):
        self.file = file
        self.dashboard = dashboard
        self.contract = contract
        self.problems: list[Problem] = []
        self.variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}

    def add(self, rule: str, where: str, message: str) -> None:
        self.problems.append(Problem(self.file, rule, where, message))

    def run(self) -> list[Problem]:
        self.template_datasource()
        self.template_variables()
        seen_ids: dict[Any, str] = {}
        for panel in panels(self.dashboard):
            where = f"panel {panel.get('id')} {panel.get('title', '')!r}"
            if panel.get("id") in seen_ids:
                self.add("panel-id-rule", where, f"id {panel.get('id')} is also {seen_ids[panel.get('id')]}'s")
            seen_ids.setdefault(panel.get("id"), where)
            if panel.get("type") == "row":
                continue
            self.panel(panel, where)
        return self.problems

    def template_datasource(self) -> None:
        variable = self.variables.get("datasource")
        if variable is None or variable.get("type") != "datasource" or variable.get("query") != "prometheus":
            self.add("template-datasource-rule", "templating", "no variable `datasource` of type datasource, "
                     "query prometheus")  # fmt: skip

    def template_variables(self) -> None:
        for name, variable in self.variables.items():
            if variable.get("type") != "query":
                continue
            where = f"variable {name}"
            if _datasource_uid(variable.get("datasource")) not in DATASOURCE_REFS:
                self.add("panel-datasource-rule", where, "does not use the datasource variable")
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            match = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", text, re.DOTALL)
            if match is None:
                self.add("template-label-promql-rule", where, f"query {text!r} is not label_values(selector, label)")
                continue
            # variables come before the job variable's value is known: no job matcher asked of them
            self.expression(match.group(1), where, "template-label-promql-rule", job_rule=False)

    def panel(self, panel: dict[str, Any], where: str) -> None:
        kind = panel.get("type", "")
        if not str(panel.get("title", "")).strip() or not str(panel.get("description", "")).strip():
            self.add("panel-title-description-rule", where, "needs a title and a description")
        if kind in UNIT_PANELS:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            if unit not in UNITS and not unit.startswith(CUSTOM_UNIT_PREFIXES):
                self.add("panel-units-rule", where, f"no or unknown unit {unit!r}")
        if kind in NO_QUERY_PANELS:
            return
        if _datasource_uid(panel.get("datasource")) not in DATASOURCE_REFS:
            self.add("panel-datasource-rule", where, f"uses datasource {panel.get('datasource')!r}, not $datasource")
        targets = panel.get("targets", [])
        if not targets:
            self.add("target-promql-rule", where, "has no query")
        for target in targets:
            target_where = f"{where} target {target.get('refId', '?')}"
            if "datasource" in target and _datasource_uid(target["datasource"]) not in DATASOURCE_REFS:
                self.add("panel-datasource-rule", target_where, f"uses datasource {target['datasource']!r}")
            self.expression(str(target.get("expr", "")), target_where, "target-promql-rule")

    def expression(self, expr: str, where: str, parse_rule: str, job_rule: bool = True) -> None:
        try:
            tree = parse(expr)
        except PromQLError as error:
            self.add(parse_rule, where, f"{expr!r} does not parse: {error}")
            return
        for node in walk(tree):
            if isinstance(node, Call) and node.func in RATE_FUNCTIONS:
                ranged = node.args[0]
                if isinstance(ranged, Range) and ranged.range not in ("$__rate_interval", "${__rate_interval}"):
                    self.add("target-rate-interval-rule", where, f"{node.func}() over [{ranged.range}], "
                             "not [$__rate_interval]")  # fmt: skip
            if not isinstance(node, Selector):
                continue
            if job_rule and "job" in self.variables and ("job", "=~", "$job") not in node.matchers:
                self.add("target-job-rule", where, f"selector {node.name or ''}{{...}} has no job=~\"$job\"")
            for metric in node.metric_names():
                if not in_contract(metric, self.contract):
                    self.add("target-metric-contract-rule", where, f"metric {metric} is not in the contract")


def lint(file: str, dashboard: dict[str, Any], contract: frozenset[str] = CONTRACT) -> list[Problem]:
    """The problems of one dashboard's JSON model."""
    return Linter(file, dashboard, contract).run()


def promtool_problems(promtool: str, files: dict[str, dict[str, Any]]) -> list[Problem]:
    """Every panel query through Prometheus' own parser: one recording rule per query, `promtool check rules`."""
    rules = []
    for file, dashboard in files.items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                expr = str(target.get("expr", ""))
                for name, value in DURATION_VARIABLES.items():
                    expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
                labels = {"file": file, "panel": str(panel.get("id")), "target": str(target.get("refId", ""))}
                rules.append({"record": "dashboard:query", "expr": expr, "labels": labels})
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump({"groups": [{"name": "dashboards", "rules": rules}]}, handle)  # JSON is YAML
        handle.flush()
        result = subprocess.run([promtool, "check", "rules", handle.name], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return []
    return [Problem("(all dashboards)", "target-promql-rule", "promtool check rules", result.stdout + result.stderr)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="dashboard JSON files (default: the shipped ones)")
    parser.add_argument("--contract", type=Path, default=METRICS_DOC, help="the metric names' document")
    parser.add_argument("--promtool", help="also parse every query with this promtool")
    args = parser.parse_args(argv)
    paths = args.files or sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        print("lint_dashboards: no dashboards", file=sys.stderr)
        return 1
    contract = contract_names(args.contract)
    loaded = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded[str(path)] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            problems.append(Problem(str(path), "json", "file", str(error)))
    for file, dashboard in loaded.items():
        problems += lint(file, dashboard, contract)
    if args.promtool:
        problems += promtool_problems(args.promtool, loaded)
    for problem in problems:
        print(problem)
    print(f"lint_dashboards: {len(paths)} dashboard(s), {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
