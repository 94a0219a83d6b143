"""Write manifests/argocd/component/argocd-cm.yaml from manifests/argocd/health.lua and actions/ (the one source).

    python hack/argocd_config.py           # rewrite argocd-cm.yaml
    python hack/argocd_config.py --check   # exit 1 if it differs from what the Lua files make

argocd-cm.yaml holds the two argocd-cm keys Argo CD reads for GPTDeployments: the health check and the resource
actions (discovery.lua and one action.lua per action, as Argo CD ships for Rollouts). Paste its data keys into your
argocd-cm, or merge them in: `kubectl -n argocd patch configmap argocd-cm --patch-file ...`, the kustomize component
manifests/argocd/component, or `kubectl apply -k manifests/argocd`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ARGOCD = Path(__file__).resolve().parents[1] / "manifests" / "argocd"
CONFIG_MAP = ARGOCD / "component" / "argocd-cm.yaml"
GROUP_KIND = "serving.gpt-operator.dev_GPTDeployment"
HEALTH_KEY = f"resource.customizations.health.{GROUP_KIND}"
ACTIONS_KEY = f"resource.customizations.actions.{GROUP_KIND}"
ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume", "wake")
HEADER = "# Generated from health.lua and actions/ by `python hack/argocd_config.py`: edit those, then run it.\n"


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line strings (Lua, and the nested actions YAML)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120)


def data(root: Path = ARGOCD) -> dict[str, str]:
    """The argocd-cm data keys: the health Lua, and the actions (a YAML document, as Argo CD expects) for the kind."""
    actions = {
        "discovery.lua": (root / "actions" / "discovery.lua").read_text(),
        "definitions": [
            {"name": name, "action.lua": (root / "actions" / name / "action.lua").read_text()} for name in ACTIONS
        ],
    }
    return {HEALTH_KEY: (root / "health.lua").read_text(), ACTIONS_KEY: _dump(actions)}


def render(root: Path = ARGOCD) -> str:
    """argocd-cm.yaml's text: a ConfigMap argocd-cm (namespace argocd) with only the GPTDeployment keys."""
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
        },
        "data": data(root),
    }
    return HEADER + _dump(config_map)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not CONFIG_MAP.exists() or CONFIG_MAP.read_text() != text:
            print(f"{CONFIG_MAP} is out of date: run python hack/argocd_config.py", file=sys.stderr)
            return 1
        return 0
    CONFIG_MAP.parent.mkdir(exist_ok=True)
    CONFIG_MAP.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
