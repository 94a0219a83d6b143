"""The PromQL a user's Grafana and Prometheus run: every dashboard panel's query with its Grafana variables filled
in, and every alert's expression without its threshold. Pure functions over the shipped JSON and YAML."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Grafana's interval variables, as a dashboard over a short, densely scraped window would get them
INTERVALS = {"__rate_interval": "15s", "__interval": "5s", "__range": "1m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = ("and", "or", "unless")
_SCALAR = re.compile(r"[\d\s.eE+\-*/()]+")


@dataclass(frozen=True)
class Query:
    """One query to evaluate: where it comes from (dashboard and panel, or rules group and alert) and its PromQL."""

    source: str  # the dashboard's title, or "alert rules"
    title: str  # the panel's title (with the target's refId when it has several), or the alert's name
    expr: str


def fill_variables(expr: str) -> str:
    """A panel's query with Grafana's variables replaced: interval variables by durations, any other (namespace, job,
    pod, model_name, ...) by `.*`, the value of "All" in a regex matcher."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return INTERVALS.get(name, ".*")

    return _VARIABLE.sub(value, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    """Every target of every panel (rows' nested panels too), variables filled in; hidden targets included."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        for target in targets:
            title = panel.get("title", "?") + (f" [{target.get('refId', '?')}]" if len(targets) > 1 else "")
            yield Query(dashboard.get("title", "?"), title, fill_variables(target["expr"]))


def alert_queries(rules: dict[str, Any]) -> Iterator[Query]:
    """Every alerting rule's expression without its threshold (see `without_threshold`)."""
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                yield Query("alert rules", rule["alert"], without_threshold(rule["expr"]))


def shipped_queries(monitoring: Path) -> list[Query]:
    """The queries of manifests/monitoring: dashboards/*.json, then rules.yaml's alerts (each if it exists)."""
    queries = [q for path in sorted((monitoring / "dashboards").glob("*.json"))
               for q in dashboard_queries(json.loads(path.read_text()))]  # fmt: skip
    rules = monitoring / "rules.yaml"
    if rules.exists():
        queries += alert_queries(yaml.safe_load(rules.read_text()))
    return queries


def without_threshold(expr: str) -> str:
    """The measured side of an alert: `A > 0.9` -> `A`; `A < 0.6 and B > 0.1` -> `A` (the first operand of a
    top-level and/or/unless, then the side of a top-level comparison that is not a constant). An expression with
    neither (`absent(...)`) is returned whole."""
    expr = _strip_comments(expr).strip()
    operands = _split_top_level(expr, _SET_OPERATORS, words=True)
    expr = _unwrap(operands[0][0])
    parts = _split_top_level(expr, _COMPARISONS, words=False)
    if len(parts) < 2:
        return expr
    left, (right, _op) = parts[0][0], parts[1]
    right = re.sub(r"^\s*bool\b", "", right)
    if _SCALAR.fullmatch(right.strip()):
        return _unwrap(left)
    if _SCALAR.fullmatch(left.strip()):
        return _unwrap(right)
    return _unwrap(left)


def _strip_comments(expr: str) -> str:
    """PromQL without its `# ...` comments (a `#` inside a quoted string stays)."""
    lines = []
    for line in expr.splitlines():
        quote = ""
        for i, char in enumerate(line):
            if quote:
                quote = "" if char == quote and line[i - 1] != "\\" else quote
            elif char in "\"'`":
                quote = char
            elif char == "#":
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def _scan(expr: str) -> Iterator[tuple[int, int]]:
    """(index, bracket depth before it) of each character outside quoted strings."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        else:
            yield i, depth
            depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        i += 1


def _split_top_level(expr: str, operators: tuple[str, ...], *, words: bool) -> list[tuple[str, str]]:
    """`expr` cut at each operator outside brackets and quotes: [(first, ""), (next, the operator before it), ...]."""
    parts: list[tuple[str, str]] = []
    start, before, skip_to = 0, "", 0
    for i, depth in _scan(expr):
        if depth or i < skip_to:
            continue
        for op in operators:  # longest first where one is the other's prefix (>= before >)
            if expr.startswith(op, i) and (not words or _word_at(expr, i, len(op))):
                parts.append((expr[start:i], before))
                start, before, skip_to = i + len(op), op, i + len(op)
                break
    parts.append((expr[start:], before))
    return parts


def _word_at(expr: str, i: int, length: int) -> bool:
    before = expr[i - 1] if i else " "
    after = expr[i + length] if i + length < len(expr) else " "
    return not (before.isalnum() or before in "_:") and not (after.isalnum() or after in "_:")


def _unwrap(expr: str) -> str:
    """`(A)` -> `A` while the outer brackets enclose the whole expression."""
    expr = expr.strip()
    while expr.startswith("("):
        closing = next((i for i, depth in _scan(expr) if depth == 1 and expr[i] == ")"), None)
        if closing != len(expr) - 1:
            break
        expr = expr[1:-1].strip()
    return expr
