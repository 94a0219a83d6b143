"""Prometheus instant queries for canary analysis, against a real HTTP server on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web
from gpt_operator.prometheus import measure
from gpt_operator.rollout.analysis import Measurement
from gpt_operator.spec import parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_only_the_due_metrics_are_asked_and_bad_answers_are_inconclusive() -> None:
    """A real HTTP server on loopback plays Prometheus."""
    asked: list[str] = []

    async def query(request: web.Request) -> web.Response:
        q = request.query["query"]
        asked.append(q)
        if q == "broken":
            return web.json_response({"status": "error", "error": "parse error"}, status=400)
        if q == "odd":
            return web.json_response(["not", "an", "object"])
        return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [1, "0.5"]}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        raw = {
            "prometheusURL": f"http://127.0.0.1:{port}",
            "metrics": [{"name": name, "query": name, "max": 1} for name in ("good", "broken", "odd", "not-due")],
        }
        spec = {"model": {"source": "builtin:tiny"}, "rollout": {"strategy": "Canary", "canary": {"analysis": raw}}}
        analysis = parse_spec(spec).rollout.canary.analysis
        assert analysis is not None
        got = await measure(analysis, {"good": "good", "broken": "broken", "odd": "odd"})
    finally:
        await runner.cleanup()
    assert asked == ["good", "broken", "odd"]
    assert got[0] == Measurement("good", value=0.5)
    assert got[1] == Measurement("broken", error="parse error")
    assert got[2].value is None and got[2].error and got[2].error.startswith("AttributeError")
