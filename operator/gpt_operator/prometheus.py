"""Prometheus instant queries for canary analysis (HTTP I/O; the decisions are in rollout/analysis.py)."""

from __future__ import annotations

import math

import aiohttp

from gpt_operator.rollout.analysis import Measurement
from gpt_operator.spec import AnalysisSpec


def _value(payload: dict) -> float | None:
    """The single number of an instant query: a scalar, or the first sample of a vector; None if empty."""
    data = payload.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        sample = result
    elif isinstance(result, list) and result:
        sample = result[0].get("value")
    else:
        return None
    value = float(sample[1])
    return None if math.isnan(value) else value


async def measure(analysis: AnalysisSpec, rendered: dict[str, str], timeout_s: float = 10.0) -> list[Measurement]:
    """Run the query of each metric in `rendered` (those due); failures to ask become inconclusive
    measurements with an error."""
    out: list[Measurement] = []
    url = analysis.prometheus_url.rstrip("/") + "/api/v1/query"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for metric in analysis.metrics:
            if metric.name not in rendered:
                continue
            try:
                async with session.get(url, params={"query": rendered[metric.name]}) as resp:
                    payload = await resp.json(content_type=None)
                    if resp.status >= 400 or payload.get("status") != "success":
                        error = payload.get("error") or f"HTTP {resp.status}"
                        out.append(Measurement(metric.name, error=str(error)))
                        continue
                out.append(Measurement(metric.name, value=_value(payload)))
            except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, IndexError, AttributeError) as exc:
                out.append(Measurement(metric.name, error=f"{type(exc).__name__}: {exc}"))
    return out
