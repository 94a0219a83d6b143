"""The engine's counters (EngineStats, what snapshot() returns) and its recent decode rate. Pure Python."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass


@dataclass
class EngineStats:
    requests_total: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_rejected: int = 0
    prompt_tokens_total: int = 0
    prefix_cached_tokens_total: int = 0  # prompt tokens not recomputed thanks to the prefix cache
    generated_tokens_total: int = 0
    decode_steps: int = 0
    queue_depth: int = 0
    running: int = 0
    tokens_per_s: float = 0.0
    kv_cache_mb: float = 0.0  # what the running sequences' KV cache holds now
    kv_cache_budget_mb: float = 0.0  # the most it may hold (EngineConfig.kv_cache_mb)
    prefix_cache_mb: float = 0.0

    @property
    def kv_cache_usage(self) -> float:
        """The fraction of the KV-cache budget in use, 0..1 (vLLM's kv_cache_usage_perc); 0 without a budget."""
        if self.kv_cache_budget_mb <= 0:
            return 0.0
        return min(1.0, max(0.0, self.kv_cache_mb / self.kv_cache_budget_mb))


class TokenRate:
    """Tokens per second over the last `seconds`, from the last `keep` decode steps."""

    def __init__(self, seconds: float = 5.0, keep: int = 256):
        self.seconds = seconds
        self._steps: collections.deque[tuple[float, int]] = collections.deque(maxlen=keep)

    def record(self, tokens: int) -> None:
        """A decode step made `tokens` tokens just now (the worker thread)."""
        self._steps.append((time.monotonic(), tokens))

    def per_second(self) -> float:
        """The recent rate; 0 when nothing was decoded lately (any thread)."""
        now = time.monotonic()
        window = [(t, n) for t, n in list(self._steps) if now - t <= self.seconds]
        if not window:
            return 0.0
        return sum(n for _, n in window) / max(now - window[0][0], 1e-3)
