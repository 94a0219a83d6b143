"""Scale to zero when idle through the real operator (kmock API) and a real HTTP /metrics: the operator reads the
last request through the client Service's ClusterIP (here 127.0.0.1, where a small server plays the pods and then the
activator), sleeps the deployment once the idle time is up, and wakes it when the activator reports a held request."""

from __future__ import annotations

from datetime import timedelta

import pytest
import pytest_asyncio
from aiohttp import web

from .conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
GPTD = "serving.gpt-operator.dev/v1alpha1/gptdeployments"
GAUGE = "gpt_last_request_timestamp_seconds"
ACTIVATOR = {"serving.gpt-operator.dev/activator": "chat"}


class FakeMetrics:
    """GET /metrics with the gauge the runtime and the activator export; `last` None = no request yet."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.reads = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.reads += 1
        value = self.last or 0.0
        return web.Response(
            text=f"# TYPE gpt_last_request_timestamp_seconds gauge\ngpt_last_request_timestamp_seconds {value}\n"
        )


@pytest_asyncio.fixture()
async def pods():
    metrics = FakeMetrics()
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield metrics, port, site
    await runner.cleanup()


async def test_idle_sleep_and_wake_by_a_held_request(cluster, operator, gptd, eventually, clock, pods) -> None:
    metrics, port, site = pods
    schedule = {"offWindows": [], "idle": {"sleepAfterSeconds": 600}}
    await cluster.put_object(GPTD, gptd(environment="dev", schedule=schedule, service={"port": port}))
    service = await eventually(lambda: cluster.get(SERVICES, "chat"))
    assert service["spec"]["selector"] == ACTIVATOR  # no runtime pod Ready yet: the activator answers
    activator = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat-activator"))
    assert activator["spec"]["replicas"] == 1
    # what the API server would have given the Service: an address (loopback, where the fake pods listen)
    await cluster.put_object(SERVICES, {**service, "spec": {**service["spec"], "clusterIP": "127.0.0.1"}})
    await cluster.settle_deployments()
    await eventually(lambda: cluster.get(SERVICES, "chat")["spec"]["selector"] != ACTIVATOR)
    await eventually(lambda: metrics.reads > 0)  # the operator reads the gauge through the Service

    start = clock.now
    metrics.last = (start + timedelta(minutes=5)).timestamp()  # requests until 12:05
    clock.now = start + timedelta(minutes=6)
    await eventually(lambda: cluster.get(GPTD, "chat")["status"].get("lastRequestTime") == "2026-03-04T12:05:00Z")

    clock.now = start + timedelta(minutes=15, seconds=1)  # 10 minutes after the last request
    asleep = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Sleeping" and o)
    assert next(c for c in asleep["status"]["conditions"] if c["type"] == "Sleeping")["reason"] == "Idle"
    assert cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 0
    await eventually(lambda: cluster.get(SERVICES, "chat")["spec"]["selector"] == ACTIVATOR)
    await cluster.settle_deployments()  # the Deployment controller's part: no pod left, none ready

    # the activator holds a request at 13:00 and says so: the operator wakes the deployment
    clock.now = start + timedelta(hours=1)
    metrics.last = clock.now.timestamp()
    await eventually(lambda: cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 1)
    assert cluster.get(SERVICES, "chat")["spec"]["selector"] == ACTIVATOR  # until a runtime pod is Ready
    await cluster.settle_deployments()
    await eventually(lambda: cluster.get(SERVICES, "chat")["spec"]["selector"] != ACTIVATOR)

    # the pods' /metrics cannot be read any more: the idle clock stops, the deployment stays awake
    await site.stop()
    clock.now = start + timedelta(hours=5)

    def on_hold() -> dict | None:
        obj = cluster.get(GPTD, "chat")
        sleeping = next(c for c in obj["status"]["conditions"] if c["type"] == "Sleeping")
        return obj if "cannot be read" in sleeping["message"] else None

    awake = await eventually(on_hold)
    assert awake["status"]["phase"] != "Sleeping"
    assert cluster.get(DEPLOYMENTS, "chat")["spec"]["replicas"] == 1
