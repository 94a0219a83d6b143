"""The sliding-window counter arithmetic shared by the memory and Redis counters (pure)."""

from __future__ import annotations

import math

from gpt_runtime.backends import WindowState


def weighted_usage(current: int, previous: int, elapsed_s: float, window_s: int) -> float:
    """Usage over the last `window_s` seconds, the previous window weighted by how much of it still overlaps."""
    return current + previous * max(0.0, 1.0 - elapsed_s / window_s)


def window_state(
    current: int, previous: int, elapsed_s: float, window_s: int, limit: int, cost: int, allowed: bool
) -> WindowState:
    """Describe a window after a hit: usage, and seconds until `cost` more would fit."""
    used = math.ceil(weighted_usage(current, previous, elapsed_s, window_s))
    if allowed or cost > limit:
        reset = window_s - elapsed_s
    elif current + cost > limit:
        reset = window_s - elapsed_s  # not before this window rolls over
    else:
        # The previous window's share decays linearly; find when it has decayed enough.
        fits_at = window_s * (1.0 - (limit - cost - current) / previous) if previous else elapsed_s
        reset = max(0.0, fits_at - elapsed_s)
    return WindowState(allowed, limit, used, max(0.001, reset))


def decide(current: int, previous: int, elapsed_s: float, window_s: int, limit: int, cost: int) -> bool:
    """Whether `cost` more fits under `limit` now."""
    return weighted_usage(current, previous, elapsed_s, window_s) + cost <= limit
