"""Draining on SIGTERM: /ready fails first, open generations finish, then uvicorn stops.

Kubernetes stops a pod by running its preStop hook (a 5 s sleep, while the endpoints drop the pod), then
sending SIGTERM, then SIGKILL once terminationGracePeriodSeconds have passed. On SIGTERM the runtime

1. marks itself draining: GET /ready answers 503, so a load balancer that probes pods directly stops sending;
2. keeps accepting and answering requests for GPT_SHUTDOWN_DELAY_S (default 0);
3. waits until no generation runs, waits for a slot or streams (SSE, WebSocket, REST, in-process jobs), at most
   until GPT_SHUTDOWN_TIMEOUT_S after the signal;
4. hands over to uvicorn's graceful shutdown with the time left: it stops listening, closes idle connections,
   waits for responses still being written, and cancels what still runs when the budget is spent;

then the lifespan closes the engine and the backends, and the process exits 0. A second SIGTERM skips the wait
for generations; SIGINT (Ctrl+C) stops at once, as before.

uvicorn alone would close every WebSocket with 1012 right at SIGTERM, cutting the generations streaming on it;
step 3 is what lets them finish.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger("gpt_runtime")

# How long no generation must be in flight before the server stops: the last frame of a stream is written just
# after its generation is counted out.
SETTLE_S = 0.3


class Drain:
    """Whether the process has been asked to stop (read by GET /ready)."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def begin(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with SIGTERM starting a drain instead of an immediate shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        in_flight: Callable[[], int],
        *,
        delay_s: float,
        timeout_s: float,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.in_flight = in_flight
        self.delay_s = delay_s
        self.timeout_s = timeout_s
        self._announced = False
        self._idle_since: float | None = None
        self._hurry = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
        elif self.drain.draining:
            self._hurry = True  # a second SIGTERM: stop waiting for generations
        else:
            # Not re-raised after the shutdown (uvicorn does that for the signals it records): a drained stop
            # exits 0. No logging here: this runs inside a signal handler; on_tick reports it.
            self.drain.begin()

    async def on_tick(self, counter: int) -> bool:
        if self.drain.started_at is not None and not self.should_exit:
            self._drain_step(time.monotonic() - self.drain.started_at)
        return await super().on_tick(counter)

    def _drain_step(self, elapsed: float) -> None:
        busy = self.in_flight()
        if not self._announced:
            self._announced = True
            log.info(
                "SIGTERM: draining",
                extra={"in_flight": busy, "delay_s": self.delay_s, "timeout_s": self.timeout_s},
            )
        now = time.monotonic()
        self._idle_since = (self._idle_since or now) if busy == 0 else None
        settled = self._idle_since is not None and now - self._idle_since >= SETTLE_S
        left = self.timeout_s - elapsed
        if self._hurry or left <= 0 or (elapsed >= self.delay_s and settled):
            if busy:
                log.warning("drain budget spent; stopping with generations in flight", extra={"in_flight": busy})
            # uvicorn's own wait for open responses gets what is left of the budget (at least a second).
            self.config.timeout_graceful_shutdown = max(1, math.ceil(left))
            self.should_exit = True
