"""The Argo CD resource actions (manifests/argocd/actions), run in Lua 5.1 like Argo CD's gopher-lua, on statuses
the operator really writes: which actions discovery offers, and the annotation each writes (the ones
`kubectl gptd` writes, which the operator acts on); the generated argocd-cm.yaml is up to date."""

from __future__ import annotations

import importlib.util
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpt_operator.naming import (
    ABORT_ANNOTATION,
    PAUSED_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    WAKE_UNTIL_ANNOTATION,
)
from gpt_operator.reconcile import desire
from lupa import lua51

from .test_argocd_health import NOON, SATURDAY, gptd, ready_cluster, reconciled

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
ACTIONS = ROOT / "manifests" / "argocd" / "actions"
CANARY = {
    "environment": "staging",
    "replicas": 2,
    "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _lua_to_py(value: Any) -> Any:
    if lua51.lua_type(value) == "table":
        return {k: _lua_to_py(v) for k, v in value.items()}
    return value


def run(script: Path, obj: dict[str, Any]) -> dict[str, Any]:
    lua = lua51.LuaRuntime()
    clean = yaml.safe_load(yaml.safe_dump(obj))  # drop Python-only types; None stays None (nil in Lua)
    lua.globals().obj = lua.table_from(clean, recursive=True)
    return _lua_to_py(lua.execute(script.read_text()))


def offered(obj: dict[str, Any]) -> set[str]:
    return {name for name, action in run(ACTIONS / "discovery.lua", obj).items() if not action["disabled"]}


def annotations_after(action: str, obj: dict[str, Any]) -> dict[str, str]:
    return run(ACTIONS / action / "action.lua", obj)["metadata"].get("annotations") or {}


def canary_in_progress(aborted: bool = False) -> dict[str, Any]:
    """A canary of a second revision at its first pause (and, aborted, after the abort annotation)."""
    objects = desire(gptd(CANARY), [], NOON).objects
    assert objects is not None
    stable = desire(gptd(CANARY, reconciled(CANARY)["status"]), ready_cluster(objects), NOON)
    changed = {**CANARY, "env": [{"name": "E2E_REVISION", "value": "2"}]}
    rolling = desire(gptd(changed, stable.status), ready_cluster(objects), NOON)
    if not aborted:
        return gptd(changed, rolling.status)
    obj = gptd(changed, rolling.status)
    obj["metadata"]["annotations"] = {ABORT_ANNOTATION: "2026-03-04T12:00:00Z"}
    after = desire(obj, ready_cluster(objects), NOON)
    return gptd(changed, after.status)


def test_available_offers_only_pause() -> None:
    assert offered(reconciled(CANARY)) == {"pause"}


def test_a_canary_in_progress_offers_promote_abort_and_pause() -> None:
    obj = canary_in_progress()
    assert obj["status"]["updateRevision"] != obj["status"]["stableRevision"]
    assert offered(obj) == {"promote", "promote-full", "abort", "pause"}


def test_an_aborted_rollout_offers_retry_not_abort_or_promote() -> None:
    obj = canary_in_progress(aborted=True)
    assert obj["status"]["abortedRevision"] == obj["status"]["updateRevision"]
    assert offered(obj) == {"retry", "pause"}


def test_paused_offers_resume_instead_of_pause() -> None:
    obj = reconciled(CANARY)
    obj["metadata"]["annotations"] = {PAUSED_ANNOTATION: "true"}
    assert offered(obj) == {"resume"}


def test_sleeping_offers_wake() -> None:
    assert "wake" in offered(reconciled({"environment": "dev"}, now=SATURDAY))
    assert "wake" not in offered(reconciled({"environment": "dev"}))


def test_no_status_yet_offers_pause_only() -> None:
    assert offered(gptd({})) == {"pause"}


@pytest.mark.parametrize(
    ("action", "key", "pattern"),
    [
        ("promote", PROMOTE_ANNOTATION, r"^step@(.*)$"),
        ("promote-full", PROMOTE_ANNOTATION, r"^full@(.*)$"),
        ("abort", ABORT_ANNOTATION, r"^(.*)$"),
        ("retry", RETRY_ANNOTATION, r"^(.*)$"),
    ],
)
def test_one_shot_actions_write_the_kubectl_gptd_annotation_with_the_time(action: str, key: str, pattern: str) -> None:
    obj = canary_in_progress()
    obj["metadata"]["annotations"] = {"team": "ml"}
    before = datetime.now(UTC).replace(microsecond=0)
    written = annotations_after(action, obj)
    match = re.match(pattern, written[key])
    assert match and STAMP.match(match.group(1)), written[key]
    moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= moment <= datetime.now(UTC) + timedelta(seconds=1)
    assert written["team"] == "ml"  # other annotations are kept


def test_pause_and_resume_set_and_remove_the_paused_annotation() -> None:
    obj = reconciled(CANARY)  # no annotations at all
    paused = annotations_after("pause", obj)
    assert paused == {PAUSED_ANNOTATION: "true"}
    obj["metadata"]["annotations"] = {PAUSED_ANNOTATION: "true", "team": "ml"}
    assert annotations_after("resume", obj) == {"team": "ml"}


def test_wake_keeps_it_awake_for_two_hours_in_utc() -> None:
    written = annotations_after("wake", reconciled({"environment": "dev"}, now=SATURDAY))[WAKE_UNTIL_ANNOTATION]
    assert STAMP.match(written), written
    until = datetime.strptime(written, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((until - datetime.now(UTC)) - timedelta(hours=2)) < timedelta(seconds=5)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("argocd_config", ROOT / "hack" / "argocd_config.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_is_generated_from_the_lua_files() -> None:
    """component/argocd-cm.yaml is what hack/argocd_config.py makes of health.lua and actions/: run it if not."""
    generator = _generator()
    assert generator.CONFIG_MAP.read_text() == generator.render(), "run: python hack/argocd_config.py"
    data = yaml.safe_load(generator.CONFIG_MAP.read_text())["data"]
    actions = yaml.safe_load(data[generator.ACTIONS_KEY])
    assert {d["name"] for d in actions["definitions"]} == {p.name for p in ACTIONS.iterdir() if p.is_dir()}
    assert actions["discovery.lua"] == (ACTIONS / "discovery.lua").read_text()


def test_the_generator_notices_an_edited_lua_file(tmp_path: Path) -> None:
    """Positive control for the drift test: a changed action makes a different argocd-cm.yaml."""
    import shutil

    generator = _generator()
    copy = tmp_path / "argocd"
    shutil.copytree(ROOT / "manifests" / "argocd", copy)
    (copy / "actions" / "abort" / "action.lua").write_text("return obj\n")
    assert generator.render(copy) != generator.render()


def test_the_applicationset_template_has_the_example_applications_drift_settings() -> None:
    """One Application per environment, each ignoring /spec/replicas as examples/application.yaml (which the e2e
    syncs) does."""
    examples = ROOT / "manifests" / "argocd" / "examples"
    app = yaml.safe_load((examples / "application.yaml").read_text())["spec"]
    appset = yaml.safe_load((examples / "applicationset.yaml").read_text())["spec"]
    template = appset["template"]["spec"]
    assert app["ignoreDifferences"] == template["ignoreDifferences"]
    assert (app["ignoreDifferences"]) == [
        {"group": "serving.gpt-operator.dev", "kind": "GPTDeployment", "jsonPointers": ["/spec/replicas"]}
    ]
    assert "RespectIgnoreDifferences=true" in template["syncPolicy"]["syncOptions"]
    assert app["syncPolicy"]["automated"] == template["syncPolicy"]["automated"]
    envs = [e["env"] for e in appset["generators"][0]["list"]["elements"]]
    assert envs == ["dev", "staging", "production"]
    assert template["source"]["path"] == "deployments/{{.env}}"


def test_the_example_operator_application_installs_the_chart_without_the_crd() -> None:
    """examples/operator.yaml (which the e2e syncs): the chart in this repository, its CRD skipped, so deleting the
    Application can never delete the CRD and with it every GPTDeployment."""
    app = yaml.safe_load((ROOT / "manifests" / "argocd" / "examples" / "operator.yaml").read_text())
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    assert source["helm"]["skipCrds"] is True
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
