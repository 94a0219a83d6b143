"""The revisions a GPTDeployment has served, and the spec that goes back to one (`kubectl gptd undo`); pure.

`status.history` keeps the last `HISTORY_LIMIT` revisions that became stable, newest first. Each entry has a
number (1, 2, ... in the order they became stable, as `kubectl argo rollouts undo --to-revision` counts), the
revision hash, the pod-deciding spec it was rendered from (`GPTDeploymentSpec.pod_template_spec`) and the time.
`undo` writes those spec fields back (`spec_for_entry`), which starts a normal rollout of that revision; the
operator itself never writes the spec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gpt_operator.spec import POD_OPTIONS, parse_spec
from gpt_operator.status import rfc3339, status_changes

HISTORY_LIMIT = 10
# The spec fields pod_template_spec reads: exactly what decides a revision.
TEMPLATE_KEYS = (
    "environment",
    "model",
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "secretRef",
    "capacity",
    *POD_OPTIONS,
    "engine",
)


class UndoError(ValueError):
    """Why `undo` changes nothing."""


def recorded_history(
    previous: list[dict[str, Any]] | None, stable: str | None, template: dict[str, Any] | None, now: datetime
) -> list[dict[str, Any]] | None:
    """status.history after `stable` is (still) the stable revision: a new first entry when it changed."""
    entries = [e for e in previous or [] if isinstance(e, dict) and e.get("revision")]
    if stable is None or template is None or (entries and entries[0]["revision"] == stable):
        return entries or None
    number = max((int(e.get("number") or 0) for e in entries), default=0) + 1
    entry = {
        "number": number,
        "revision": stable,
        # no nulls: the API server would drop them, and the next compare would write the status again
        "template": {key: value for key, value in template.items() if value is not None},
        "time": rfc3339(now),
    }
    return [entry, *(e for e in entries if e["revision"] != stable)][:HISTORY_LIMIT]


def undo_target(history: list[dict[str, Any]] | None, current: str | None, to_revision: str | None) -> dict[str, Any]:
    """The history entry `undo` goes back to: the newest one the spec does not run, or the one named by
    `to_revision` (its number, or a prefix of its revision hash)."""
    entries = [e for e in history or [] if isinstance(e, dict) and e.get("revision") and e.get("template")]
    if to_revision is None:
        for entry in entries:
            if entry["revision"] != current:
                return entry
        raise UndoError("status.history holds no earlier revision to go back to")
    wanted = to_revision.strip()
    if wanted.isdigit():
        found = [e for e in entries if str(e.get("number")) == wanted]
    else:
        found = [e for e in entries if wanted and e["revision"].startswith(wanted)]
    if not found:
        known = ", ".join(f"{e.get('number')} ({e['revision']})" for e in entries) or "none"
        raise UndoError(f"no revision {wanted!r} in status.history (known: {known})")
    if found[0]["revision"] == current:
        raise UndoError(f"the spec already runs revision {found[0].get('number')} ({current})")
    return found[0]


def spec_for_entry(raw_spec: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The spec with the revision-deciding fields of `entry` and every other field as it is.

    Fields whose effect is already the entry's keep the user's own spelling (an unset `capacity.type: auto`
    stays unset when it resolves to the recorded type); otherwise the recorded values are written as they are.
    The result is checked: it must hash to the entry's revision, or UndoError."""
    template = entry.get("template") or {}
    try:
        current: dict[str, Any] | None = parse_spec(raw_spec).pod_template_spec()
    except ValidationError:
        current = None
    rest = {key: value for key, value in raw_spec.items() if key not in TEMPLATE_KEYS}
    own, literal = dict(rest), dict(rest)
    for key in TEMPLATE_KEYS:
        recorded = template.get(key)
        if recorded is not None:
            literal[key] = recorded
        if current is not None and current.get(key) == recorded:
            if key in raw_spec:
                own[key] = raw_spec[key]
        elif recorded is not None:
            own[key] = recorded
    revision = entry.get("revision")
    for candidate in (own, literal):
        if _revision(candidate) == revision:
            return _without_defaults(candidate, raw_spec, revision)
    raise UndoError(f"the recorded fields of revision {entry.get('revision')} no longer make that revision")


def _revision(spec: dict[str, Any]) -> str | None:
    try:
        return parse_spec(spec).revision
    except ValidationError:
        return None


def _without_defaults(spec: dict[str, Any], raw_spec: dict[str, Any], revision: str | None) -> dict[str, Any]:
    """`spec` less the recorded fields (and subfields) that are defaults: dropping them keeps the revision.
    Fields the user's spec already had as they are stay."""
    out = dict(spec)
    for key in TEMPLATE_KEYS:
        if key not in out or raw_spec.get(key) == out[key]:
            continue
        trial = {k: v for k, v in out.items() if k != key}
        if _revision(trial) == revision:
            out = trial
        elif isinstance(out[key], dict):
            for sub in list(out[key]):
                trial = {**out, key: {k: v for k, v in out[key].items() if k != sub}}
                if _revision(trial) == revision:
                    out = trial
    return out


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `old` into `new` (removed keys as null)."""
    return status_changes(old, new) | {key: None for key in old if key not in new}
