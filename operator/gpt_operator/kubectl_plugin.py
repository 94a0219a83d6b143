"""`kubectl gptd`: drive rollouts and schedules by annotation (GitOps manifests stay untouched).

Installed as the `kubectl-gptd` command, so kubectl finds it as a plugin:

    kubectl gptd promote NAME [--full]      next canary step / promote the blue-green preview (--full: all steps)
    kubectl gptd abort NAME                 back to the stable revision
    kubectl gptd pause NAME | resume NAME   hold a rollout / let it go on
    kubectl gptd wake NAME [--for 2h]       wake a sleeping deployment until then (default 2h)
    kubectl gptd retry NAME                 run the aborted revision again from the first step
    kubectl gptd undo NAME [--to-revision N]  write the previous (or revision N's) pod spec back into the spec
    kubectl gptd status NAME [--watch]      phase, strategy, tracks and rollout position (--watch: live, with pods;
                                            --until PHASE / --timeout 5m end it for scripts)
    kubectl gptd list [-A]                  every GPTDeployment in a table

`-n/--namespace` and `--context` pass through to kubectl. The mapping from command to annotation, the undo
patch and every view are pure (`annotation_changes`, `retry_problem`, `undo_patch`, `watch_view`, `table`);
the only I/O is running kubectl.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from gpt_operator.history import UndoError, merge_patch, spec_for_entry, undo_target
from gpt_operator.naming import (
    ABORT_ANNOTATION,
    NAME_LABEL,
    PAUSED_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    REVISION_LABEL,
    TRACK_LABEL,
    WAKE_UNTIL_ANNOTATION,
)
from gpt_operator.spec import parse_spec

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def parse_duration(text: str) -> timedelta:
    """'90m', '2h', '1d12h', '45s' -> timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 30m, 2h, 1d)")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def annotation_changes(
    command: str, *, full: bool = False, wake_for: str = "2h", now: datetime
) -> dict[str, str | None]:
    """The annotations a command sets (a value) or removes (None).

    promote, abort and retry write a value unique to the request (`step@<time>`, `full@<time>`, `<time>`): the
    operator records the value it acted on, so two requests in a row are two actions, and one request seen
    twice (after an operator crash) is one."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if command == "promote":
        return {PROMOTE_ANNOTATION: f"{'full' if full else 'step'}@{stamp}"}
    if command == "abort":
        return {ABORT_ANNOTATION: stamp}
    if command == "retry":
        return {RETRY_ANNOTATION: stamp}
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


def current_revision(obj: dict[str, Any]) -> str | None:
    """The revision the GPTDeployment's spec asks for (as the operator hashes it)."""
    try:
        return parse_spec(obj.get("spec") or {}).revision
    except ValidationError:
        return (obj.get("status") or {}).get("updateRevision")


def retry_problem(obj: dict[str, Any]) -> str | None:
    """Why `retry` would do nothing (None: the spec's revision is the aborted one, so a retry runs it again)."""
    status = obj.get("status") or {}
    name, aborted, current = obj["metadata"]["name"], status.get("abortedRevision"), current_revision(obj)
    if not aborted:
        return f"gptdeployment {name}: no aborted rollout to retry (phase {status.get('phase', 'Pending')})"
    if aborted != current:
        return (
            f"gptdeployment {name}: revision {aborted} was aborted, but the spec now asks for revision {current},"
            " which rolls out by itself"
        )
    return None


def undo_patch(obj: dict[str, Any], to_revision: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merge patch that writes a recorded revision's pod spec back into the spec, and that history entry.

    The patch carries the object's resourceVersion: if the spec changed since it was read, the API server
    refuses it (409) rather than undoing something else. UndoError when there is nothing to go back to."""
    entry = undo_target((obj.get("status") or {}).get("history"), current_revision(obj), to_revision)
    spec = obj.get("spec") or {}
    patch = {
        "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")},
        "spec": merge_patch(spec, spec_for_entry(spec, entry)),
    }
    return patch, entry


def gitops_managed(obj: dict[str, Any]) -> bool:
    """Argo CD tracks this object (its label or annotation): an auto-sync reverts an undo."""
    meta = obj.get("metadata") or {}
    return "argocd.argoproj.io/tracking-id" in (meta.get("annotations") or {}) or "app.kubernetes.io/instance" in (
        meta.get("labels") or {}
    )


def track_roles(obj: dict[str, Any]) -> dict[str, str]:
    """What each track does for users now: its traffic share (canary) or its Service (blue-green)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    name = obj["metadata"]["name"]
    strategy = (spec.get("rollout") or {}).get("strategy", "RollingUpdate")
    if strategy == "Canary":
        weight = int(status.get("canaryWeight") or 0)
        return {"stable": f"{100 - weight}% of traffic", "canary": f"{weight}% of traffic"}
    if strategy == "BlueGreen":
        roles = {}
        if status.get("activeTrack"):
            roles[status["activeTrack"]] = f"active (Service {name})"
        if status.get("previewTrack"):
            roles[status["previewTrack"]] = f"preview (Service {name}-preview)"
        return roles
    return {"main": f"all traffic (Service {name})"}


def pod_state(pod: dict[str, Any]) -> str:
    """Ready, NotReady, Terminating, or the pod's phase when it is not running."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    if phase != "Running":
        return phase
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return "Ready" if ready else "NotReady"


def tracks_view(obj: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """The tracks with their role and their pods (by the operator's track and revision labels)."""
    roles = track_roles(obj)
    by_track: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        track = ((pod.get("metadata") or {}).get("labels") or {}).get(TRACK_LABEL, "?")
        by_track.setdefault(track, []).append(pod)
    lines = ["tracks:"]
    for track in [*roles, *sorted(t for t in by_track if t not in roles)]:
        members = sorted(by_track.get(track, []), key=lambda p: p["metadata"]["name"])
        ready = sum(pod_state(p) == "Ready" for p in members)
        lines.append(f"  {track:<8} {roles.get(track, 'no traffic'):<34} {ready}/{len(members)} pods ready")
        for pod in members:
            revision = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL, "?")
            lines.append(f"    {pod['metadata']['name']:<44} {pod_state(pod):<11} revision {revision}")
    return "\n".join(lines)


def watch_view(obj: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """One frame of `status` (and of `status --watch`): the rollout, then the tracks and their pods."""
    return f"{describe(obj)}\n{tracks_view(obj, pods)}"


def reached(obj: dict[str, Any], phase: str) -> bool:
    """The operator has seen the current spec (observedGeneration) and reports `phase`."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return status.get("phase") == phase and (generation is None or status.get("observedGeneration") == generation)


def human_age(age: timedelta) -> str:
    """An age as `kubectl get` prints it (90s, 5m30s, 47m, 3h10m, 20h, 4d6h, 30d, 2y10d)."""
    s = max(0, int(age.total_seconds()))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 192:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    years = d // 365
    return f"{years}y{d % 365}d" if years < 8 and d % 365 else f"{years}y"


def rollout_position(obj: dict[str, Any]) -> str:
    """CANARY/STEP: a canary's weight and step (`20% 1/4`), `-` for the other strategies."""
    rollout = (obj.get("spec") or {}).get("rollout") or {}
    status = obj.get("status") or {}
    if rollout.get("strategy") != "Canary" or status.get("canaryWeight") is None:
        return "-"
    steps = len((rollout.get("canary") or {}).get("steps") or [])
    step = status.get("currentStep")
    return f"{status['canaryWeight']}%" + ("" if step is None else f" {step}/{steps}")


def table(items: list[dict[str, Any]], *, all_namespaces: bool, now: datetime) -> str:
    """`kubectl gptd list`: one row per GPTDeployment, columns as `kubectl get` aligns them."""
    header = ["NAME", "ENV", "STRATEGY", "PHASE", "READY", "CANARY/STEP", "AGE"]
    rows = []
    for obj in sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        created = meta.get("creationTimestamp")
        age = human_age(now - datetime.fromisoformat(created.replace("Z", "+00:00"))) if created else "<unknown>"
        row = [
            meta["name"],
            spec.get("environment", "dev"),
            (spec.get("rollout") or {}).get("strategy", "RollingUpdate"),
            status.get("phase", "Pending"),
            status.get("ready", "-"),
            rollout_position(obj),
            age,
        ]
        rows.append([meta.get("namespace", ""), *row] if all_namespaces else row)
    if all_namespaces:
        header = ["NAMESPACE", *header]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


class Kubectl:
    """kubectl with the user's -n/--context, for the commands' few calls."""

    def __init__(self, kube_args: list[str]) -> None:
        binary = shutil.which("kubectl")
        if binary is None:
            sys.exit("kubectl-gptd: kubectl is not on PATH")
        self.command = [binary, *kube_args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.command, *args], capture_output=True, text=True, check=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "-o", "json")
        if result.returncode != 0:
            raise KubectlFailed(result.stderr.strip() or f"kubectl {' '.join(args)} failed", result.returncode)
        return json.loads(result.stdout)

    def view(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        obj = self.json("get", "gptd", name)
        pods = self.json("get", "pods", "-l", f"{NAME_LABEL}={name}")
        return obj, pods.get("items") or []


class KubectlFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def watch(
    fetch: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]],
    *,
    until: str | None,
    timeout_s: float | None,
    write: Callable[[str], None],
    clear: bool,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll every `interval_s` and write a frame whenever the view changed (after clearing the screen on a
    terminal). 0 once the phase is `until`; 1 when `timeout_s` ran out first; runs until Ctrl-C otherwise."""
    deadline = None if timeout_s is None else clock() + timeout_s
    last = None
    while True:
        try:
            obj, pods = fetch()
            frame = watch_view(obj, pods)
        except KubectlFailed as exc:
            obj, frame = None, f"error: {exc}"
        if frame != last:
            write((CLEAR_SCREEN if clear else ("" if last is None else "\n")) + frame + "\n")
            last = frame
        if until is not None and obj is not None and reached(obj, until):
            return 0
        if deadline is not None and clock() >= deadline:
            phase = ((obj or {}).get("status") or {}).get("phase")
            wanted = f"phase {until}" if until else "the end"
            write(f"timed out after {timeout_s:g}s waiting for {wanted} (phase is {phase})\n")
            return 1
        sleep(interval_s)


COMMANDS = ["promote", "abort", "retry", "pause", "resume", "wake", "undo", "status", "list"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl gptd", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("name", nargs="?")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--context")
    parser.add_argument("--full", action="store_true", help="promote: skip the remaining canary steps")
    parser.add_argument("--for", dest="wake_for", default="2h", help="wake: how long (e.g. 90m, 2h, 1d)")
    parser.add_argument("--to-revision", help="undo: a number or revision hash from status.history")
    parser.add_argument("-w", "--watch", action="store_true", help="status: redraw on every change")
    parser.add_argument("--until", metavar="PHASE", help="status --watch: exit 0 once the phase is PHASE")
    parser.add_argument("--timeout", help="status --watch: exit 1 after this long (e.g. 90s, 5m)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="list: every namespace")
    args = parser.parse_args(argv)
    if args.command != "list" and not args.name:
        parser.error(f"{args.command} needs the GPTDeployment's name")
    kubectl = Kubectl(
        [*(["-n", args.namespace] if args.namespace else []), *(["--context", args.context] if args.context else [])]
    )
    try:
        return _run(parser, args, kubectl)
    except KubectlFailed as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, kubectl: Kubectl) -> int:
    if args.command == "list":
        items = kubectl.json("get", "gptd", *(["-A"] if args.all_namespaces else []))["items"]
        if not items:
            print("No GPTDeployments found.", file=sys.stderr)
            return 0
        print(table(items, all_namespaces=args.all_namespaces, now=datetime.now(UTC)))
        return 0
    if args.command == "status":
        if not (args.watch or args.until or args.timeout):  # --until and --timeout only make sense watching
            print(watch_view(*kubectl.view(args.name)))
            return 0
        try:
            timeout = None if args.timeout is None else parse_duration(args.timeout).total_seconds()
        except ValueError as exc:
            parser.error(str(exc))

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        return watch(
            lambda: kubectl.view(args.name), until=args.until, timeout_s=timeout, write=write, clear=sys.stdout.isatty()
        )
    if args.command == "undo":
        obj = kubectl.json("get", "gptd", args.name)
        try:
            patch, entry = undo_patch(obj, args.to_revision)
        except UndoError as exc:
            print(f"gptdeployment {args.name}: {exc}", file=sys.stderr)
            return 1
        result = kubectl.run("patch", "gptd", args.name, "--type", "merge", "-p", json.dumps(patch))
        if result.returncode != 0:
            print(result.stderr.strip(), file=sys.stderr)
            return result.returncode
        print(
            f"gptdeployment {args.name}: spec back at revision {entry.get('number')} ({entry['revision']}); rolling out"
        )
        if gitops_managed(obj):
            print(
                "note: Argo CD manages this GPTDeployment; its next sync (auto-sync) reverts this undo", file=sys.stderr
            )
        return 0
    if args.command == "retry":
        problem = retry_problem(kubectl.json("get", "gptd", args.name))
        if problem:
            print(problem, file=sys.stderr)
            return 1
    try:
        changes = annotation_changes(args.command, full=args.full, wake_for=args.wake_for, now=datetime.now(UTC))
    except ValueError as exc:
        parser.error(str(exc))
    pairs = [f"{key}-" if value is None else f"{key}={value}" for key, value in changes.items()]
    result = kubectl.run("annotate", "gptd", args.name, "--overwrite", *pairs)
    print((result.stdout or result.stderr).strip(), file=sys.stdout if result.returncode == 0 else sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
