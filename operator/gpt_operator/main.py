"""kopf wiring: settings, login, and one reconcile for create/update/resume plus a timer.

The only module that imports kopf. Everything it decides comes from reconcile.desire (pure); everything it
writes to children goes through apply.py; the GPTDeployment's own status and annotations are written by
kopf's merge patch (`patch`), only with the fields that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from gpt_operator import apply, prometheus
from gpt_operator.naming import jwt_secret_name
from gpt_operator.reconcile import analysis_request, desire
from gpt_operator.spec import GROUP, PLURAL, VERSION
from gpt_operator.status import apply_failed_status


@dataclass
class OperatorState:
    """What the handlers share: settings, the API client made at login, one lock per object."""

    settings: Any
    client: apply.KubeClient | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    clock: Any = None  # () -> aware datetime; tests pass a fake

    def now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())


def in_cluster_server(environ: Mapping[str, str]) -> str | None:
    """The API server as in-cluster clients (client-go's InClusterConfig) find it: from the kubelet-set
    KUBERNETES_SERVICE_HOST/PORT, which need no cluster DNS (kopf's default, https://kubernetes.default.svc, does)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def credentials(info: kopf.ConnectionInfo) -> apply.Credentials:
    return apply.Credentials(
        server=info.server,
        token=info.token,
        scheme=info.scheme,
        ca_path=info.ca_path,
        ca_data=info.ca_data,
        certificate_path=info.certificate_path,
        certificate_data=info.certificate_data,
        private_key_path=info.private_key_path,
        private_key_data=info.private_key_data,
        insecure=bool(info.insecure),
    )


async def reconcile(state: OperatorState, body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
    """Read the tracks, decide, apply children, patch status and annotations, report events."""
    assert state.client is not None, "login has not run"
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return  # being deleted (alone or with its namespace): the garbage collector removes the children
    async with state.lock(meta["namespace"], meta["name"]):
        live = await apply.read_children(state.client, meta["namespace"], meta["name"])
        deployments = [obj for (kind, _), obj in live.items() if kind == "Deployment"]
        now = state.now()
        request = analysis_request(dict(body), now)
        measurements = await prometheus.measure(*request) if request else None
        desired = desire(dict(body), deployments, now, measurements)
        previous = dict(body.get("status") or {})
        if desired.objects is not None:
            try:
                if await apply.ensure_jwt_secret(state.client, dict(body)):
                    logger.info(f"created Secret {jwt_secret_name(meta['name'])} (a new JWT signing key)")
                result = await apply.sync_children(state.client, dict(body), desired.objects, live)
            except apply.ApiError as exc:
                message = f"the API refused a child: {exc}"
                patch.status.update(apply.status_changes(previous, apply_failed_status(previous, message, now)))
                kopf.event(body, type="Warning", reason="ApplyFailed", message=message)
                raise kopf.TemporaryError(message, delay=state.settings.resync_seconds * 3) from exc
            if result.changed:
                logger.info(f"applied {result.applied}, pruned {result.pruned}")
        patch.status.update(apply.status_changes(previous, desired.status))
        for key in desired.consumed_annotations:
            patch.metadata.annotations[key] = None
        for event in desired.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if desired.problems:
        raise kopf.PermanentError("invalid spec: " + "; ".join(desired.problems))


def build_registry(state: OperatorState) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry (no module-level globals)."""
    registry = kopf.OperatorRegistry()
    settings = state.settings

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.watching.server_timeout = state.settings.watch_server_timeout_s
        settings.watching.client_timeout = state.settings.watch_client_timeout_s
        settings.posting.level = logging.WARNING  # events for warnings only from kopf's own logs
        settings.posting.reporting_component = "gpt-operator"
        settings.peering.standalone = True  # one replica with Recreate; no peering objects needed

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo:
        if settings.server:
            info = kopf.ConnectionInfo(server=settings.server)
        else:
            info = kopf.login_with_service_account(**kwargs)
            server = in_cluster_server(os.environ)
            if info is not None and server:
                info = dataclasses.replace(info, server=server)
            info = info or kopf.login_with_kubeconfig(**kwargs)
        if info is None:
            raise kopf.LoginError("no service account and no kubeconfig found")
        if state.client is not None:  # a re-login (e.g. a rotated token): new credentials for new requests
            state.client.renew(credentials(info))
        else:
            state.client = apply.KubeClient(
                credentials(info), field_manager=settings.field_manager, timeout_s=settings.request_timeout_s
            )
        return info

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        if state.client is not None:
            await state.client.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile_on_change(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        await reconcile(state, body, patch, logger)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=settings.resync_seconds, registry=registry)
    async def reconcile_on_timer(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        # An invalid spec is already reported by status and event; the timer keeps looking for a fix.
        with contextlib.suppress(kopf.PermanentError):
            await reconcile(state, body, patch, logger)

    return registry


async def operate(state: OperatorState, **kwargs: Any) -> None:
    """Run the operator until stopped (kwargs go to kopf.operator, e.g. stop_flag, ready_flag)."""
    settings = state.settings
    namespaces = settings.namespace_list
    # kopf's default identity asks the passwd database for the user, which has no entry for the image's
    # uid 65532 (or any uid a cluster assigns): name it from the pod instead.
    kwargs.setdefault("identity", f"gpt-operator@{socket.gethostname()}")
    await kopf.operator(
        registry=build_registry(state),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        **kwargs,
    )


def run() -> None:
    from gpt_operator.settings import OperatorSettings

    settings = OperatorSettings()
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=(kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL),
    )
    asyncio.run(operate(OperatorState(settings=settings), liveness_endpoint=settings.liveness_endpoint))
