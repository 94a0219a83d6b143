"""kopf wiring: settings, login, leader election, and one reconcile for create/update/resume plus a resync.

The only module that imports kopf. Everything it decides comes from reconcile.desire (pure); children are
read from the informer cache (informer.py) and written through kube_apply.py; the GPTDeployment's status and
annotations are written here, in a fixed order (children, status, annotations: see
reconcile.one_shot_bookkeeping), by merge patches with only the fields that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from yarl import URL

from gpt_operator import activity, apply, events, kube, kube_apply, prometheus
from gpt_operator.informer import ChildCache
from gpt_operator.leader import LeaderElector, LeaseConfig
from gpt_operator.metrics import CONTENT_TYPE, OperatorMetrics, analysis_failed, error_reason
from gpt_operator.reconcile import activity_url, analysis_request, desire
from gpt_operator.settings import OperatorSettings
from gpt_operator.spec import GROUP, PLURAL, VERSION
from gpt_operator.status import apply_failed_status, status_changes

log = logging.getLogger(__name__)
API_VERSION = f"{GROUP}/{VERSION}"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FAILPOINT_EXIT = 70
CHANGE_DEBOUNCE_S = 0.2


@dataclass
class OperatorState:
    """What the handlers share: settings, the API client and child cache made at startup, one lock per object."""

    settings: OperatorSettings
    client: kube.KubeClient | None = None
    cache: ChildCache | None = None
    secrets_seen: apply.SecretsSeen | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None  # () -> aware datetime; tests pass a fake
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)  # GET /metrics, leader and standby

    def __post_init__(self) -> None:
        if self.secrets_seen is None:
            self.secrets_seen = apply.SecretsSeen(ttl_s=self.settings.secret_check_interval_s)

    def now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())


async def connect(state: OperatorState) -> kube.KubeClient:
    """The API client (once per process): explicit server, in-cluster, or kubeconfig (see kube.py)."""
    if state.client is None:
        settings = state.settings
        state.client = kube.KubeClient(
            await kube.load_configuration(settings.server),
            field_manager=settings.field_manager,
            timeout_s=settings.request_timeout_s,
            reload=lambda: kube.load_configuration(settings.server),
        )
    return state.client


def connection_info(login: kube.Login) -> kopf.ConnectionInfo:
    """kopf's credentials: the same ones the operator's own client uses."""
    return kopf.ConnectionInfo(
        server=login.server,
        token=login.token,
        ca_path=login.ca_path,
        certificate_path=login.certificate_path,
        private_key_path=login.private_key_path,
        insecure=login.insecure or None,
    )


def failpoint(name: str, environ: Mapping[str, str] = os.environ) -> None:
    """Crash here (exit 70), once, if GPT_OPERATOR_FAILPOINT names this point: the e2e crash tests' only hook.
    Once: a marker file in GPT_OPERATOR_FAILPOINT_DIR (default /tmp, an emptyDir that outlives a container
    restart in the operator's pod) stops it from firing again after the restart."""
    if environ.get("GPT_OPERATOR_FAILPOINT") != name:
        return
    marker = Path(environ.get("GPT_OPERATOR_FAILPOINT_DIR") or "/tmp") / f"gpt-operator-failpoint-{name}"
    if marker.exists():
        return
    marker.touch()
    log.error(f"failpoint {name}: exiting with status {FAILPOINT_EXIT}")
    logging.shutdown()
    os._exit(FAILPOINT_EXIT)


def failure_reason(exc: BaseException) -> str:
    """The reconcile_errors_total reason of a failed reconcile: the operator's own two, else by kind."""
    if isinstance(exc, kopf.PermanentError):
        return "InvalidSpec"
    if isinstance(exc, kopf.TemporaryError):
        return "ApplyFailed"
    return error_reason(exc)


async def reconcile(
    state: OperatorState, body: kopf.Body | dict[str, Any], logger: Any, *, changed: bool = False
) -> None:
    """One reconcile (see reconcile_once), counted in the metrics: outcome, duration, error reason, and
    the time of the deployment's last success. A deleted GPTDeployment's series are removed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        state.metrics.forget(namespace, name)
        return  # being deleted (alone or with its namespace): the garbage collector removes the children
    started = time.perf_counter()
    try:
        await reconcile_once(state, body, logger, changed=changed)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        state.metrics.reconciled(namespace, name, time.perf_counter() - started, error=failure_reason(exc))
        raise
    state.metrics.reconciled(namespace, name, time.perf_counter() - started, at=time.time())


async def reconcile_once(
    state: OperatorState, body: kopf.Body | dict[str, Any], logger: Any, *, changed: bool = False
) -> None:
    """Read the tracks from the cache, decide, apply children, then write status, then annotations."""
    assert state.client is not None and state.cache is not None, "startup has not run"
    client, cache = state.client, state.cache
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    async with state.lock(namespace, name):
        body = cache.owners.freshest(dict(body))  # our own last write may be newer than the event's body
        live = cache.children(namespace, name)
        deployments = [obj for (kind, _), obj in live.items() if kind == "Deployment"]
        now = state.now()
        request = analysis_request(dict(body), now)
        measurements = await prometheus.measure(*request) if request else None
        activity_at = activity_url(dict(body), [obj for (kind, _), obj in live.items() if kind == "Service"])
        read, observed_request = await activity.last_request(activity_at) if activity_at else (True, None)
        desired = desire(dict(body), deployments, now, measurements, observed_request, activity_read=read)
        previous = dict(body.get("status") or {})
        if desired.objects is not None:
            try:
                # a change of the GPTDeployment looks at its Secrets at once; a resync after secret_check_interval_s
                for secret in desired.secrets:
                    if await kube_apply.ensure_secret(client, dict(body), secret, state.secrets_seen, look=changed):
                        logger.info(f"created Secret {secret.name(name)} ({secret.what})")
                result = await kube_apply.sync_children(client, cache, dict(body), desired.objects, live)
            except kube.ApiError as exc:
                message = f"the API refused a child: {exc}"
                failed = apply_failed_status(previous, message, now)
                await write_status(state, namespace, name, previous, failed)
                state.metrics.observe(namespace, name, failed, desired.sleep)
                await events.post(client, body, "Warning", "ApplyFailed", message)
                raise kopf.TemporaryError(message, delay=state.settings.resync_seconds * 3) from exc
            if result.changed:
                logger.info(f"applied {result.applied}, pruned {result.pruned}")
        recorded, before = desired.status.get("lastActions") or {}, previous.get("lastActions") or {}
        acted = any(before.get(key) != value for key, value in recorded.items())  # a new one-shot action
        if acted:
            failpoint("after-children")
        await write_status(state, namespace, name, previous, desired.status)
        state.metrics.observe(namespace, name, desired.status, desired.sleep)
        if analysis_failed(previous, desired.status):
            state.metrics.analysis_failed(namespace, name)
        if acted:
            failpoint("after-status")
        if desired.consumed_annotations:
            patch = {"metadata": {"annotations": {key: None for key in desired.consumed_annotations}}}
            cache.owners.store(await client.merge_patch(API_VERSION, PLURAL, namespace, name, patch))
        for event in desired.events:
            await events.post(client, body, event.type, event.reason, event.message)
    if desired.problems:
        raise kopf.PermanentError("invalid spec: " + "; ".join(desired.problems))


async def write_status(
    state: OperatorState, namespace: str, name: str, previous: dict[str, Any], wanted: dict[str, Any]
) -> None:
    """A merge patch of the status subresource with what changed; nothing when nothing did. The answer
    goes into the cache, so the next reconcile starts from this status even before its watch event."""
    assert state.client is not None and state.cache is not None
    changes = status_changes(previous, wanted)
    if changes:
        patch = {"status": changes}
        state.cache.owners.store(
            await state.client.merge_patch(API_VERSION, PLURAL, namespace, name, patch, status=True)
        )


@dataclass
class Queue:
    """GPTDeployments whose children changed (a Deployment's pods became ready, a child was deleted by hand):
    reconciled at once rather than at the next full resync."""

    dirty: set[tuple[str, str]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, namespace: str, name: str) -> None:
        self.dirty.add((namespace, name))
        self.wake.set()

    def take(self) -> set[tuple[str, str]]:
        taken, self.dirty = self.dirty, set()
        self.wake.clear()
        return taken


async def resync(state: OperatorState, stop: asyncio.Event, queue: Queue) -> None:
    """Reconcile every GPTDeployment in the cache every resync_seconds (schedules, rollout steps), and the
    owners of changed children as they change. A task, not a kopf timer: kopf timers put a finalizer on every
    object, so deletion would wait for a running operator; nothing here needs one (children go with their
    owner's garbage collection)."""
    assert state.cache is not None
    settings = state.settings
    limit = asyncio.Semaphore(settings.resync_concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with limit:
            meta = body["metadata"]
            logger = logging.LoggerAdapter(log, {"object": f"{meta.get('namespace')}/{meta.get('name')}"})
            try:
                await reconcile(state, body, logger)
            except (kopf.PermanentError, kopf.TemporaryError):
                pass  # already reported by status and event; the next tick looks again
            except Exception:  # one object's failure must not stop the others
                logger.exception(f"reconcile of {meta.get('namespace')}/{meta.get('name')} failed")

    owners = state.cache.owners
    next_full = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_full:
            queue.take()
            next_full = time.monotonic() + settings.resync_seconds
            await asyncio.gather(*(one(body) for body in list(owners.objects.values())))
            state.metrics.retain(owners.objects)  # the series of GPTDeployments deleted since go
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.wake.wait(), max(0.0, next_full - time.monotonic()))
        await asyncio.sleep(CHANGE_DEBOUNCE_S)  # a burst of child events makes one reconcile
        cached = owners.objects
        bodies = [cached.get(key) for key in queue.take()]
        await asyncio.gather(*(one(body) for body in bodies if body is not None))


def build_registry(state: OperatorState) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry (no module-level globals)."""
    registry = kopf.OperatorRegistry()
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()
    queue = Queue()
    logins = 0

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.persistence.finalizer = f"{GROUP}/finalizer"  # none is needed: kopf removes old ones
        settings.watching.server_timeout = state.settings.watch_server_timeout_s
        settings.watching.client_timeout = state.settings.watch_client_timeout_s
        settings.posting.level = logging.WARNING  # events for warnings only from kopf's own logs
        settings.posting.reporting_component = "gpt-operator"
        settings.peering.standalone = True  # one active replica: leader election (leader.py) decides which
        client = await connect(state)
        if state.cache is None:
            state.cache = ChildCache(
                client,
                apply.CHILD_KINDS,
                namespaces=state.settings.namespace_list,
                optional=apply.OPTIONAL_KINDS,
                owners=(API_VERSION, PLURAL),
                on_change=queue.add,
            )
        state.cache.start()
        await state.cache.wait_synced(timeout_s=state.settings.cache_sync_timeout_s)
        tasks.append(asyncio.create_task(resync(state, stop, queue), name="resync"))

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        nonlocal logins
        client = await connect(state)
        if logins:  # kopf asks again after a 401: load the credentials again (an exec plugin runs again)
            await client.relogin()
        logins += 1
        return connection_info(kube.login_of(client.configuration))

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        stop.set()
        queue.wake.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, state.settings.resync_seconds + 5)
        if state.cache is not None:
            await state.cache.stop()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile_on_change(body: kopf.Body, logger: Any, **_: Any) -> None:
        await reconcile(state, body, logger, changed=True)

    return registry


def lease_namespace(settings: OperatorSettings, environ: Mapping[str, str] = os.environ) -> str:
    """Where the leader Lease lives: the setting, else the pod's namespace, else `default`."""
    if settings.lease_namespace:
        return settings.lease_namespace
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    return "default"


async def serve_health(
    endpoint: str, elector: LeaderElector | None, metrics: OperatorMetrics | None = None
) -> web.AppRunner:
    """GET /healthz on the liveness endpoint: 200 while the event loop runs, for the leader and the standby;
    GET /metrics on the same host and port (Prometheus text format; see metrics.py)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": elector is None or elector.leading})

    async def serve_metrics(_: web.Request) -> web.Response:
        assert metrics is not None
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    url = URL(endpoint)
    app = web.Application()
    app.router.add_get(url.path or "/healthz", healthz)
    if metrics is not None:
        app.router.add_get("/metrics", serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.host, url.port).start()
    return runner


async def operate(state: OperatorState, **kwargs: Any) -> None:
    """Run the operator until stopped (kwargs go to kopf.operator, e.g. stop_flag, ready_flag).

    With leader election on, wait for the Lease first, then run kopf while renewing it; losing it ends the
    process with status 1 (kopf's handlers stop first), as client-go's controllers do, and the pod restarts
    as a candidate."""
    settings = state.settings
    namespaces = settings.namespace_list
    # kopf's default identity asks the passwd database for the user, which has no entry for the image's
    # uid 65532 (or any uid a cluster assigns): name it from the pod instead.
    identity = f"gpt-operator@{socket.gethostname()}-{os.getpid()}"
    kwargs.setdefault("identity", identity)
    client = await connect(state)
    elector = None
    if settings.leader_election:
        elector = LeaderElector(
            client,
            LeaseConfig(
                name=settings.lease_name,
                namespace=lease_namespace(settings),
                identity=identity,
                lease_duration_s=settings.lease_duration_s,
                renew_deadline_s=settings.lease_renew_deadline_s,
                retry_period_s=settings.lease_retry_period_s,
            ),
        )
    health = (
        await serve_health(settings.liveness_endpoint, elector, state.metrics) if settings.liveness_endpoint else None
    )
    try:
        if elector is not None:
            await elector.acquire()
        operator = asyncio.create_task(
            kopf.operator(
                registry=build_registry(state),
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=True,
                **kwargs,
            )
        )
        waits: set[asyncio.Task] = {operator}
        holding = asyncio.create_task(elector.hold()) if elector is not None else None
        if holding is not None:
            waits.add(holding)
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if holding is not None and holding in done and operator not in done:
            operator.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await operator
            raise SystemExit(1)
        if holding is not None:
            holding.cancel()
        await operator
    finally:
        if elector is not None:
            await elector.release()
        if health is not None:
            await health.cleanup()
        await client.close()
        state.client = state.cache = None


def run() -> None:
    settings = OperatorSettings()
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=(kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL),
    )
    asyncio.run(operate(OperatorState(settings=settings)))
