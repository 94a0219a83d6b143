"""`kubectl gptd`: drive rollouts and schedules by annotation (GitOps manifests stay untouched).

Installed as the `kubectl-gptd` command, so kubectl finds it as a plugin:

    kubectl gptd promote NAME [--full]      next canary step / promote the blue-green preview (--full: all steps)
    kubectl gptd abort NAME                 back to the stable revision
    kubectl gptd pause NAME | resume NAME   hold a rollout / let it go on
    kubectl gptd wake NAME [--for 2h]       wake a sleeping deployment until then (default 2h)
    kubectl gptd status NAME                phase, strategy, tracks and rollout position

`-n/--namespace` and `--context` pass through to kubectl. The mapping from command to annotation is
pure (`annotation_changes`); the only I/O is running kubectl.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from gpt_operator.naming import ABORT_ANNOTATION, PAUSED_ANNOTATION, PROMOTE_ANNOTATION, WAKE_UNTIL_ANNOTATION

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


def parse_duration(text: str) -> timedelta:
    """'90m', '2h', '1d12h' -> timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 1d)")
    days, hours, minutes = (int(group or 0) for group in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def annotation_changes(
    command: str, *, full: bool = False, wake_for: str = "2h", now: datetime
) -> dict[str, str | None]:
    """The annotations a command sets (a value) or removes (None).

    promote and abort write a value unique to the request (`step@<time>`, `full@<time>`, `<time>`): the
    operator records the value it acted on, so two requests in a row are two actions, and one request seen
    twice (after an operator crash) is one."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if command == "promote":
        return {PROMOTE_ANNOTATION: f"{'full' if full else 'step'}@{stamp}"}
    if command == "abort":
        return {ABORT_ANNOTATION: stamp}
    if command == "pause":
        return {PAUSED_ANNOTATION: "true"}
    if command == "resume":
        return {PAUSED_ANNOTATION: None}
    if command == "wake":
        until = (now + parse_duration(wake_for)).astimezone(UTC)
        return {WAKE_UNTIL_ANNOTATION: until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    raise ValueError(f"unknown command {command!r}")


def describe(obj: dict) -> str:
    """The lines `kubectl gptd status` prints for one GPTDeployment."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    rollout = spec.get("rollout", {}) or {}
    lines = [
        f"name:        {obj['metadata']['name']}",
        f"environment: {spec.get('environment', '')}",
        f"strategy:    {rollout.get('strategy', 'RollingUpdate')}",
        f"phase:       {status.get('phase', 'Pending')}",
        f"replicas:    {status.get('readyReplicas', 0)}/{status.get('replicas', 0)} ready",
    ]
    for key, label in (
        ("activeTrack", "active:"),
        ("previewTrack", "preview:"),
        ("canaryWeight", "canary:"),
        ("currentStep", "step:"),
        ("nextTransitionTime", "next change:"),
    ):
        if status.get(key) not in (None, ""):
            lines.append(f"{label:<12} {status[key]}{'%' if key == 'canaryWeight' else ''}")
    for condition in status.get("conditions", []):
        if condition.get("status") == "True":
            lines.append(f"condition:   {condition['type']} ({condition.get('reason', '')})")
    return "\n".join(lines)


def _kubectl(kube_args: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    if binary is None:
        sys.exit("kubectl-gptd: kubectl is not on PATH")
    return subprocess.run([binary, *kube_args, *args], capture_output=True, text=True, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl gptd", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["promote", "abort", "pause", "resume", "wake", "status"])
    parser.add_argument("name")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--context")
    parser.add_argument("--full", action="store_true", help="promote: skip the remaining canary steps")
    parser.add_argument("--for", dest="wake_for", default="2h", help="wake: how long (e.g. 90m, 2h, 1d)")
    args = parser.parse_args(argv)
    kube_args = [
        *(["-n", args.namespace] if args.namespace else []),
        *(["--context", args.context] if args.context else []),
    ]
    if args.command == "status":
        result = _kubectl(kube_args, "get", "gptd", args.name, "-o", "json")
        if result.returncode != 0:
            print(result.stderr.strip(), file=sys.stderr)
            return result.returncode
        print(describe(json.loads(result.stdout)))
        return 0
    try:
        changes = annotation_changes(args.command, full=args.full, wake_for=args.wake_for, now=datetime.now(UTC))
    except ValueError as exc:
        parser.error(str(exc))
    pairs = [f"{key}-" if value is None else f"{key}={value}" for key, value in changes.items()]
    result = _kubectl(kube_args, "annotate", "gptd", args.name, "--overwrite", *pairs)
    print((result.stdout or result.stderr).strip(), file=sys.stdout if result.returncode == 0 else sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
