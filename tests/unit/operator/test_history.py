"""status.history and the spec `kubectl gptd undo` writes back (gpt_operator.history)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gpt_operator.history import (
    HISTORY_LIMIT,
    UndoError,
    merge_patch,
    recorded_history,
    spec_for_entry,
    undo_target,
)
from gpt_operator.spec import parse_spec

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
OLD = {
    "environment": "staging",
    "model": {"source": "builtin:tiny"},
    "replicas": 3,
    "env": [{"name": "GPT_LOG_LEVEL", "value": "info"}],
    "rollout": {"strategy": "Canary"},
}
NEW = {
    **OLD,
    "replicas": 5,  # not part of the revision: undo leaves it
    "image": "ghcr.io/gpt-operator/gpt-runtime:0.2.0",
    "env": [],
    "podLabels": {"team": "ml"},
    "engine": {"type": "llamacpp"},
    "model": {"source": "builtin:smollm2-135m"},
}


def entry(spec: dict, number: int) -> dict:
    parsed = parse_spec(spec)
    [recorded] = recorded_history(None, parsed.revision, parsed.pod_template_spec(), NOW) or []
    return {**recorded, "number": number}


def test_a_new_stable_revision_goes_first_with_the_next_number_and_the_list_is_bounded() -> None:
    history = None
    for i in range(HISTORY_LIMIT + 3):
        history = recorded_history(history, f"r{i}", {"image": f"i{i}", "secretRef": None}, NOW)
    assert history is not None and len(history) == HISTORY_LIMIT
    assert [e["number"] for e in history[:2]] == [HISTORY_LIMIT + 3, HISTORY_LIMIT + 2]
    assert history[0] == {"number": 13, "revision": "r12", "template": {"image": "i12"}, "time": "2026-03-04T12:00:00Z"}
    assert recorded_history(history, "r12", {"image": "i12"}, NOW) == history  # still stable: unchanged
    back = recorded_history(history, "r5", {"image": "i5"}, NOW)  # a rollback: r5 again, under a new number
    assert back is not None and back[0]["number"] == 14 and [e["revision"] for e in back].count("r5") == 1


def test_undo_goes_to_the_newest_revision_the_spec_does_not_run_or_the_one_named() -> None:
    history = [entry(NEW, 3), entry(OLD, 2)]
    new, old = history[0]["revision"], history[1]["revision"]
    assert undo_target(history, new, None)["revision"] == old
    assert undo_target(history, "other", None)["revision"] == new  # mid-rollout of an unrecorded revision
    assert undo_target(history, new, "2")["revision"] == old
    assert undo_target(history, new, old[:6])["revision"] == old
    with pytest.raises(UndoError, match="already runs revision 3"):
        undo_target(history, new, "3")
    with pytest.raises(UndoError, match="no revision '7'"):
        undo_target(history, new, "7")
    with pytest.raises(UndoError, match="no earlier revision"):
        undo_target(history[:1], new, None)


def test_the_undone_spec_makes_the_recorded_revision_and_keeps_everything_else() -> None:
    old = entry(OLD, 1)
    spec = spec_for_entry(NEW, old)
    assert parse_spec(spec).revision == old["revision"] != parse_spec(NEW).revision
    assert spec["replicas"] == 5 and spec["rollout"] == NEW["rollout"]
    assert "podLabels" not in spec and "engine" not in spec and "image" not in spec
    assert "capacity" not in spec  # capacity.type auto still resolves to the recorded spot: left unset
    assert merge_patch(NEW, spec) == {
        "image": None,
        "env": [{"name": "GPT_LOG_LEVEL", "value": "info"}],
        "podLabels": None,
        "engine": None,
        "model": {"source": "builtin:tiny"},
    }
    # and forward again, from the recorded fields alone
    assert parse_spec(spec_for_entry(spec, entry(NEW, 2))).revision == parse_spec(NEW).revision


def test_an_entry_whose_fields_no_longer_make_its_revision_is_refused() -> None:
    broken = {**entry(OLD, 1), "revision": "0000000000"}
    with pytest.raises(UndoError, match="no longer make that revision"):
        spec_for_entry(NEW, broken)
