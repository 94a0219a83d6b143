"""GET /metrics of the real kopf operator against the API emulator, over HTTP, as Prometheus scrapes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from .conftest import NAMESPACE, Clock, Emulator, free_port, running_operator

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

GPTD = "serving.gpt-operator.dev/v1alpha1/gptdeployments"
GPTD_PATH = f"/apis/serving.gpt-operator.dev/v1alpha1/namespaces/{NAMESPACE}/gptdeployments"


@pytest_asyncio.fixture()
async def served(cluster: Emulator, clock: Clock) -> AsyncIterator[str]:
    """The operator (as conftest's `operator` fixture runs it) with its health server on; yields its base URL."""
    port = free_port()
    async with running_operator(cluster, clock, f"http://127.0.0.1:{port}/healthz"):
        yield f"http://127.0.0.1:{port}"


async def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """One scrape, parsed as Prometheus parses it: (sample name, labels) -> value."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(found: dict, metric: str, /, **labels: str) -> float | None:
    return found.get((metric, frozenset(labels.items())))


def of(deployment: str) -> dict[str, str]:
    """The labels of a GPTDeployment's series."""
    return {"namespace": NAMESPACE, "name": deployment}


async def test_metrics_show_reconciles_phase_last_success_and_go_with_the_deployment(
    cluster, served, gptd, eventually
) -> None:
    before = await scrape(served)
    assert sample(before, "gpt_operator_reconcile_total", outcome="success") == 0.0

    await cluster.put_object(GPTD, gptd(environment="staging", replicas=2))
    await eventually(lambda: cluster.get(GPTD, "chat").get("status", {}).get("phase"))
    await cluster.settle_deployments()
    await eventually(lambda: cluster.get(GPTD, "chat")["status"]["phase"] == "Available")

    async def available() -> dict:
        found = await scrape(served)
        assert sample(found, "gpt_operator_phase", **of("chat"), phase="Available") == 1.0
        return found

    found = await poll(available)
    assert sample(found, "gpt_operator_reconcile_total", outcome="success") >= 1.0
    for phase in ("Pending", "Progressing", "Paused", "Sleeping", "Degraded"):
        assert sample(found, "gpt_operator_phase", **of("chat"), phase=phase) == 0.0
    assert sample(found, "gpt_operator_sleeping", **of("chat")) == 0.0
    last = sample(found, "gpt_operator_last_successful_reconcile_timestamp_seconds", **of("chat"))
    assert last is not None and abs(time.time() - last) < 30
    assert sample(found, "gpt_operator_reconcile_duration_seconds_count") >= 1.0
    assert not [key for key in found if key[0] == "gpt_operator_degraded"]

    async with aiohttp.ClientSession() as http, http.get(f"{served}/healthz") as resp:
        assert resp.status == 200  # the probes' endpoint on the same port

    async with cluster.request("DELETE", f"{GPTD_PATH}/chat") as resp:
        assert resp.status == 200, await resp.text()

    async def gone() -> dict:
        found = await scrape(served)
        assert not [key for key in found if ("name", "chat") in key[1]]
        return found

    await poll(gone)


async def test_an_invalid_spec_counts_an_error_and_shows_degraded_with_its_reason(
    cluster, served, gptd, eventually
) -> None:
    await cluster.put_object(GPTD, gptd("broken", replicas=-1))

    async def degraded() -> dict:
        found = await scrape(served)
        assert sample(found, "gpt_operator_degraded", **of("broken"), reason="InvalidSpec") == 1.0
        assert sample(found, "gpt_operator_reconcile_errors_total", reason="InvalidSpec") >= 1.0
        return found

    found = await poll(degraded)
    assert sample(found, "gpt_operator_phase", **of("broken"), phase="Degraded") == 1.0
    assert sample(found, "gpt_operator_reconcile_total", outcome="error") >= 1.0
    assert sample(found, "gpt_operator_last_successful_reconcile_timestamp_seconds", **of("broken")) is None


async def poll(check, within: float = 10.0) -> dict:
    """Scrape until `check` passes (its AssertionError is the last word)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
