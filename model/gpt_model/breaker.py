"""A circuit breaker for a dependency that can go away: fail fast while it is down, probe it now and then.

Pure: the clock is passed in, so tests drive it without sleeping. Closed, every call goes through; after
`failures` consecutive failures it opens and refuses calls for `reset_s`; then one call at a time is let
through (half-open) until one succeeds (closed again) or fails (open for another `reset_s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Counts consecutive failures of a dependency and says whether to try it."""

    def __init__(self, failures: int = 5, reset_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def retry_after_s(self) -> float:
        """Seconds until the next call is let through (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self.opened_at))

    def allow(self) -> bool:
        """Whether a call may go to the dependency now; in half-open, one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.consecutive += 1
        self.probing = False
        if self.opened_at is not None or self.consecutive >= self.threshold:
            self.opened_at = self.clock()
