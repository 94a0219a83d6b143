"""`python -m gpt_operator render FILE` prints the objects the operator would create (no cluster);
`python -m gpt_operator run` starts the operator."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gpt_operator.reconcile import desire
from gpt_operator.schema import apply_defaults, crd_version_schema, validation_problems
from gpt_operator.spec import API_VERSION, KIND, VERSION

DEFAULT_CRD = Path("crds/gptdeployments.yaml")


def _load_schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        path = DEFAULT_CRD if DEFAULT_CRD.exists() else None
    if path is None:
        return None
    return crd_version_schema(yaml.safe_load(path.read_text()), VERSION)


def render_documents(text: str, now: datetime, schema: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The children of every GPTDeployment in a YAML stream, and the problems that stopped any of them."""
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
            problems.append(f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: not a {KIND} ({API_VERSION})")
            continue
        name = doc.get("metadata", {}).get("name", "?")
        if schema is not None:
            found = validation_problems(doc, schema)
            if found:
                problems += [f"{KIND} {name}: {p}" for p in found]
                continue
            doc = apply_defaults(doc, schema)
        doc.setdefault("metadata", {}).setdefault("namespace", "default")
        result = desire(doc, [], now)
        if result.objects is None:
            problems += [f"{KIND} {name}: {p}" for p in result.problems]
            continue
        objects += result.objects
    return objects, problems


def _render(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        print("--now needs a time zone offset, e.g. 2026-03-04T12:00:00Z", file=sys.stderr)
        return 2
    objects, problems = render_documents(text, now, _load_schema(Path(args.crd) if args.crd else None))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True))
    return 0


def _run(args: argparse.Namespace) -> int:
    from gpt_operator.main import run  # imports kopf: only the run command needs it

    run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the objects a GPTDeployment renders to, without a cluster")
    render.add_argument("file", help="a YAML file with GPTDeployments, or - for stdin")
    render.add_argument("--now", help="the time to render at (RFC 3339), for schedules; default: now")
    render.add_argument("--crd", help=f"the CRD to validate and default against; default: {DEFAULT_CRD} if present")
    render.set_defaults(func=_render)
    run = sub.add_parser("run", help="run the operator (uses the in-cluster or local kubeconfig)")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
