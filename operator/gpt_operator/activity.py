"""The last API request a GPTDeployment's pods (or its activator) saw, read from /metrics (HTTP I/O; the idle
decision is in schedule.py). One GET through the client Service reaches one pod; the operator keeps the latest
time in status.lastRequestTime, so successive reads cover every pod."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

GAUGE = "gpt_last_request_timestamp_seconds"


def parse_last_request(metrics_text: str) -> datetime | None:
    """The gauge's value as an aware datetime; None when absent, unset (0) or unreadable."""
    for line in metrics_text.splitlines():
        if line.startswith(GAUGE) and line[len(GAUGE) : len(GAUGE) + 1] in (" ", "{"):
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                return None
            return datetime.fromtimestamp(value, UTC) if value > 0 else None
    return None


async def last_request(url: str, timeout_s: float = 3.0) -> tuple[bool, datetime | None]:
    """GET `url` (a /metrics) and read the gauge: (read, time). `read` is False when it could not be read (no
    pod answering, a NetworkPolicy, an operator outside the cluster); the time is None before any request."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, headers={"Connection": "close"}) as resp,
        ):
            if resp.status != 200:
                return False, None
            return True, parse_last_request(await resp.text())
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return False, None
