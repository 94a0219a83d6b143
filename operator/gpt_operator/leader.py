"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.

Every replica tries to take the Lease; the holder renews it every `retry_period_s`. A candidate takes over
only after the holder's record has not changed for `lease_duration_s` by the candidate's own clock (no clock
comparison between machines). Every write is conditional on the resourceVersion read, so two candidates
cannot both win. A leader that cannot renew for `renew_deadline_s` stops leading (main.py then exits, and
the pod restarts as a candidate); one that stops cleanly releases the Lease so the next one starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpt_operator.kube import ApiError, KubeClient

log = logging.getLogger(__name__)

API_VERSION, PLURAL = "coordination.k8s.io/v1", "leases"


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(config: LeaseConfig, previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The Lease as this candidate writes it when it takes or renews it (pure)."""
    spec = dict((previous or {}).get("spec") or {})
    holder = spec.get("holderIdentity")
    ours = holder == config.identity
    new_spec = {
        "holderIdentity": config.identity,
        "leaseDurationSeconds": max(1, round(config.lease_duration_s)),
        "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours or not holder else 1),
    }
    metadata: dict[str, Any] = {"name": config.name, "namespace": config.namespace}
    if previous is not None:
        metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": new_spec}


class LeaderElector:
    """Take, hold and release one Lease."""

    def __init__(self, client: KubeClient, config: LeaseConfig, clock=time.monotonic) -> None:
        self.client = client
        self.config = config
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None  # the other holder's record, as last seen
        self._observed_at = 0.0
        self.leading = False

    async def try_acquire_or_renew(self) -> bool:
        config = self.config
        try:
            lease = await self.client.get(API_VERSION, PLURAL, config.namespace, config.name)
        except ApiError as exc:
            log.warning(f"leader election: cannot read Lease {config.namespace}/{config.name}: {exc}")
            return False
        now = datetime.now(UTC)
        if lease is not None:
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            if holder and holder != config.identity:
                record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
                if record != self._observed:
                    self._observed, self._observed_at = record, self._clock()
                duration = float(spec.get("leaseDurationSeconds") or config.lease_duration_s)
                if self._clock() - self._observed_at < duration:
                    return False  # held by a live leader
        body = lease_body(config, lease, now)
        try:
            if lease is None:
                await self.client.create(body, API_VERSION, PLURAL)
            else:
                await self.client.replace(body, API_VERSION, PLURAL)
        except ApiError as exc:
            if exc.status != 409:  # 409: another candidate wrote first
                log.warning(f"leader election: cannot write Lease {config.namespace}/{config.name}: {exc}")
            return False
        self._observed, self._observed_at = None, self._clock()
        return True

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease."""
        config = self.config
        log.info(f"leader election: {config.identity} waits for Lease {config.namespace}/{config.name}")
        while not await self.try_acquire_or_renew():  # noqa: ASYNC110 (polling the API, not a local flag)
            await asyncio.sleep(config.retry_period_s)
        self.leading = True
        log.info(f"leader election: {self.config.identity} leads")

    async def hold(self) -> None:
        """Renew the Lease until a renewal deadline passes without success; then return (leadership lost)."""
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(self.config.retry_period_s)
            if await self.try_acquire_or_renew():
                last_renewal = self._clock()
            elif self._clock() - last_renewal > self.config.renew_deadline_s:
                self.leading = False
                log.error(f"leader election: {self.config.identity} lost the Lease (no renewal in time)")
                return

    async def release(self) -> None:
        """Give the Lease up (a clean stop), so that another candidate takes it without waiting it out."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self.client.get(API_VERSION, PLURAL, self.config.namespace, self.config.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
            await self.client.replace(lease, API_VERSION, PLURAL)
            log.info(f"leader election: {self.config.identity} released the Lease")
        except ApiError as exc:
            log.warning(f"leader election: could not release the Lease: {exc}")
