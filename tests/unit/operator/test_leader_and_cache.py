"""Leader election on a Lease, the informer cache and events, against an in-memory API (pure logic)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from gpt_operator.events import MAX_MESSAGE, event_body
from gpt_operator.informer import Reflector, newer_or_same
from gpt_operator.kube import ApiError
from gpt_operator.leader import LeaderElector, LeaseConfig, lease_body

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


class Leases:
    """One Lease with optimistic concurrency, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0

    async def get(self, *_: Any) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    async def create(self, obj: dict[str, Any], *_: Any) -> dict[str, Any]:
        if self.lease is not None:
            raise ApiError(409, "exists")
        return self._store(obj)

    async def replace(self, obj: dict[str, Any], *_: Any) -> dict[str, Any]:
        assert self.lease is not None
        if obj["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        return self._store(obj)

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: Leases, identity: str, clock: Clock) -> LeaderElector:
    config = LeaseConfig(name="gpt-operator", namespace="ops", identity=identity, lease_duration_s=15)
    return LeaderElector(api, config, clock=clock)  # type: ignore[arg-type]


def test_one_candidate_leads_and_the_other_waits_out_the_lease_by_its_own_clock() -> None:
    api, clock = Leases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert asyncio.run(a.try_acquire_or_renew())
    assert not asyncio.run(b.try_acquire_or_renew())  # held: b starts timing a's record
    clock.t += 10
    assert not asyncio.run(b.try_acquire_or_renew())
    assert asyncio.run(a.try_acquire_or_renew())  # a renews: a new record restarts b's timing
    clock.t += 14
    assert not asyncio.run(b.try_acquire_or_renew())
    clock.t += 16  # a stopped renewing 30 s ago by b's clock
    assert asyncio.run(b.try_acquire_or_renew())
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "b" and api.lease["spec"]["leaseTransitions"] == 1
    assert not asyncio.run(a.try_acquire_or_renew())  # a, back, finds b's fresh record


def test_a_write_from_a_stale_read_loses() -> None:
    api, clock = Leases(), Clock()
    a = elector(api, "a", clock)
    assert asyncio.run(a.try_acquire_or_renew())
    stale = asyncio.run(api.get())
    assert asyncio.run(a.try_acquire_or_renew())  # the version moved on
    with pytest.raises(ApiError):
        asyncio.run(api.replace(lease_body(LeaseConfig("gpt-operator", "ops", "b"), stale, NOW)))


def test_release_lets_the_next_candidate_in_at_once() -> None:
    api, clock = Leases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    asyncio.run(a.acquire())
    assert a.leading
    asyncio.run(a.release())
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] is None
    assert asyncio.run(b.try_acquire_or_renew())  # no 15 s wait


def test_lease_body_keeps_acquire_time_on_renewal() -> None:
    config = LeaseConfig("gpt-operator", "ops", "a", lease_duration_s=15)
    first = lease_body(config, None, NOW)
    assert first["spec"]["acquireTime"] == first["spec"]["renewTime"] == "2026-03-04T12:00:00.000000Z"
    stored = {**first, "metadata": {**first["metadata"], "resourceVersion": "7"}}
    later = lease_body(config, stored, NOW.replace(minute=1))
    assert later["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert later["spec"]["renewTime"] == "2026-03-04T12:01:00.000000Z"
    assert later["metadata"]["resourceVersion"] == "7" and later["spec"]["leaseDurationSeconds"] == 15


def obj(name: str, version: str, instance: str = "chat", ns: str = "ml") -> dict[str, Any]:
    labels = {"serving.gpt-operator.dev/name": instance}
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": version, "labels": labels}}


def test_reflector_keeps_the_newest_version_and_indexes_by_instance() -> None:
    r = Reflector(client=None, kind="Service", api_version="v1", plural="services", namespace=None)  # type: ignore[arg-type]
    r.store(obj("chat", "5"))
    r.store(obj("chat", "4"))  # an older watch event after our write's answer
    assert r.objects[("ml", "chat")]["metadata"]["resourceVersion"] == "5"
    r.store(obj("chat-preview", "6"))
    r.store(obj("other", "7", instance="other"))
    assert sorted(o["metadata"]["name"] for o in r.of_instance("ml", "chat")) == ["chat", "chat-preview"]
    r.forget("ml", "chat")
    assert [o["metadata"]["name"] for o in r.of_instance("ml", "chat")] == ["chat-preview"]
    assert r.freshest(obj("other", "3", instance="other"))["metadata"]["resourceVersion"] == "7"
    assert newer_or_same(obj("x", "10"), obj("x", "9")) and not newer_or_same(obj("x", "9"), obj("x", "10"))


def test_event_names_its_object_and_is_capped() -> None:
    owner = {"apiVersion": "serving.gpt-operator.dev/v1alpha1", "kind": "GPTDeployment"}
    owner["metadata"] = {"name": "chat", "namespace": "ml", "uid": "u-1"}
    event = event_body(owner, "Warning", "InvalidSpec", "x" * 5000, NOW)
    assert event["involvedObject"] == {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "name": "chat",
        "namespace": "ml",
        "uid": "u-1",
    }
    assert len(event["message"]) == MAX_MESSAGE and event["metadata"]["generateName"] == "chat."


def test_the_cache_keeps_no_managed_fields() -> None:
    r = Reflector(client=None, kind="Deployment", api_version="apps/v1", plural="deployments", namespace=None)  # type: ignore[arg-type]
    big = obj("chat", "5")
    big["metadata"]["managedFields"] = [{"manager": "gpt-operator", "fieldsV1": {"f:spec": {}}}]
    big["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}
    r.store(big)
    kept = r.objects[("ml", "chat")]["metadata"]
    assert "managedFields" not in kept and kept["annotations"] == {"keep": "me"}
    assert "managedFields" in big["metadata"]  # the caller's object is not changed
