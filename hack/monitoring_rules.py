"""Write manifests/monitoring/prometheusrule.yaml from manifests/monitoring/rules.yaml (the one source).

    python hack/monitoring_rules.py           # rewrite the PrometheusRule
    python hack/monitoring_rules.py --check   # exit 1 if it differs from what rules.yaml makes

The rules file is what `promtool check rules` and `promtool test rules` read and what a plain Prometheus loads;
the PrometheusRule (the Prometheus Operator's kind) is the same groups under `spec`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"
RULES = MONITORING / "rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
HEADER = "# Generated from rules.yaml by `python hack/monitoring_rules.py`: edit rules.yaml, then run it.\n"


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line strings (PromQL), so the generated file reads like the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule object holding the rules file's groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "gpt-operator",
            "namespace": "gpt-operator-system",
            "labels": {"app.kubernetes.io/name": "gpt-operator", "app.kubernetes.io/component": "alerting"},
        },
        "spec": {"groups": rules["groups"]},
    }


def render(rules_text: str) -> str:
    """prometheusrule.yaml's text for the given rules.yaml text."""
    body = yaml.dump(prometheus_rule(yaml.safe_load(rules_text)), Dumper=_Dumper, sort_keys=False, width=120)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args()
    text = render(RULES.read_text())
    if args.check:
        if PROMETHEUS_RULE.read_text() != text:
            print(f"{PROMETHEUS_RULE} is out of date: run python hack/monitoring_rules.py", file=sys.stderr)
            return 1
        return 0
    PROMETHEUS_RULE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
