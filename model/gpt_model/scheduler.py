"""The scheduler: which requests wait, which are prefilled and which decode. Pure Python (no torch).

Each step (the engine's worker thread calls `schedule`):
  1. requests finished from outside (cancelled) leave; their slots are freed,
  2. the prompt being prefilled in chunks gets its next chunk (at most `prefill_chunk` prompt tokens a step, so
     running streams keep flowing while long prompts arrive: the prefill/decode split),
  3. with the rest of that budget, waiting requests are admitted first come first served into free slots: whole
     prompts packed into one forward, or one longer prompt alone, which is then prefilled in chunks; a request
     waits while the KV cache for it and the running ones would not fit the memory budget (`SlotOps.fits`).
The engine runs the returned StepPlan, then decodes `decode_batch()` together: running requests occupy slots
0..n-1, kept compact by moving the last one into a freed slot.

Thread safety: `cond` guards the queues. The loop thread adds and cancels; only the worker moves requests
between queues and slots. A cancelled request is marked finished at once and leaves its slot before the next step.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpt_model.request import Request, RequestStatus


class SlotOps(Protocol):
    """What scheduling needs of the model side (the ModelRunner has these)."""

    def fits(self, slots: int, length: int) -> bool: ...

    def move(self, src: int, dst: int) -> None: ...

    def free(self, slot: int) -> None: ...


class PrefixLookup(Protocol):
    """A prefix cache: the cached blocks (of `block` tokens) at the start of a prompt."""

    block: int

    def lookup(self, tokens: Sequence[int]) -> list[Any]: ...


@dataclass
class Chunk:
    """Prompt tokens to prefill: `tokens` into `slot` from position `start`. When `last`, the prompt is then all in
    and the request decodes from `request.slot` (the engine moves the slot there if it differs)."""

    request: Request
    slot: int
    start: int
    tokens: list[int]
    last: bool


@dataclass
class StepPlan:
    """One step's prefill work, run in this order: `chunk`, then `reserve` (slots, length) in the KV cache, then the
    admitted requests' cached prefixes (`Request.hit`) go into their slots, then `pack`: whole prompts in one
    forward, or (`pack_chunked`) the first chunk of one prompt too long for this step."""

    chunk: Chunk | None = None
    reserve: tuple[int, int] | None = None
    pack: list[Chunk] = field(default_factory=list)
    prefix_cached_tokens: int = 0  # prompt tokens of the admitted requests found in the prefix cache

    @property
    def pack_chunked(self) -> bool:
        return len(self.pack) == 1 and not self.pack[0].last


def _advance(req: Request, status: RequestStatus) -> None:
    """Move a request on, unless it was finished (cancelled) meanwhile: that stays."""
    if not req.finished:
        req.status = status


class Scheduler:
    def __init__(
        self,
        slots: SlotOps,
        *,
        max_batch_size: int,
        max_queue: int,
        prefill_chunk: int,
        prefix: PrefixLookup | None = None,
        on_move: Callable[[Request, int, int], None] | None = None,
    ):
        self.slots = slots
        self.max_batch_size, self.max_queue, self.prefill_chunk = max_batch_size, max_queue, prefill_chunk
        self.prefix = prefix
        self.on_move = on_move  # called after a running request moved (request, src, dst)
        self.cond = threading.Condition()
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []  # fully prefilled; slot == index
        self.prefilling: Request | None = None  # at most one, at a slot >= len(running)

    # -- the loop thread -------------------------------------------------------------------------

    def add(self, req: Request) -> bool:
        """Queue a request; False when the queue is full."""
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                return False
            req.status = RequestStatus.WAITING
            self.waiting.append(req)
            self.cond.notify()
            return True

    def cancel(self, req: Request, reason: str = "cancelled") -> None:
        """Finish a request from outside the worker: it leaves the queue now, its slot before the next step."""
        with self.cond:
            req.finish(reason)
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)
            self.cond.notify()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.prefilling)

    def counts(self) -> tuple[int, int]:
        """(waiting, running) with the prompt being prefilled counted as running."""
        with self.cond:
            return len(self.waiting), len(self.running) + (self.prefilling is not None)

    # -- the worker ------------------------------------------------------------------------------

    def schedule(self) -> StepPlan:
        """Drop requests finished from outside, then plan this step's prefill within `prefill_chunk` tokens."""
        self._drop_cancelled()
        plan = StepPlan()
        budget = self.prefill_chunk
        if self.prefilling is not None:  # a long prompt, one chunk per step
            plan.chunk = self._next_chunk(self.prefilling, budget)
            budget -= len(plan.chunk.tokens)
        if self.prefilling is None and budget > 0:
            self._admit(budget, plan)
        return plan

    def decode_batch(self) -> list[Request]:
        """The running requests, finished ones dropped: the batch of a decode step, in slot order."""
        self.drop_finished()
        return list(self.running)

    def drop_finished(self) -> None:
        for req in [r for r in self.running if r.finished]:
            self._remove(req)

    def fail_all(self) -> list[Request]:
        """Take every running and prefilling request out (a step failed: they finish with an error)."""
        with self.cond:
            failed = list(self.running) + ([self.prefilling] if self.prefilling else [])
            self.running.clear()
            self.prefilling = None
            return failed

    def clear(self) -> None:
        with self.cond:
            self.waiting.clear()
            self.running.clear()
            self.prefilling = None

    def _drop_cancelled(self) -> None:
        req = self.prefilling
        if req is not None and req.finished:
            self.prefilling = None
            self.slots.free(req.slot)
        self.drop_finished()

    def _next_chunk(self, req: Request, budget: int) -> Chunk:
        """The next chunk of a long prompt; with the last one, the request joins the running ones."""
        chunk = Chunk(req, req.slot, req.prefilled, req.prompt[req.prefilled : req.prefilled + budget], False)
        req.prefilled += len(chunk.tokens)
        if req.prefilled < len(req.prompt):
            return chunk
        chunk.last = True
        with self.cond:
            self.prefilling = None
            req.slot = len(self.running)
            _advance(req, RequestStatus.RUNNING)
            self.running.append(req)
        return chunk

    def _admit(self, budget: int, plan: StepPlan) -> None:
        """Waiting requests for free slots, first come first served: whole prompts within `budget` tokens, or one
        longer prompt alone (then prefilled in chunks). A request waits while the KV cache for it and the running
        ones (each up to prompt + max_tokens) would exceed the memory budget."""
        pack: list[Request] = []
        used = 0
        length = max((r.need for r in self.running), default=0)
        with self.cond:
            while self.waiting and len(self.running) + len(pack) < self.max_batch_size:
                req = self.waiting[0]
                if req.finished:
                    self.waiting.popleft()
                    continue
                slots, longest = len(self.running) + len(pack) + 1, max(length, req.need)
                if (self.running or pack) and not self.slots.fits(slots, longest):
                    break
                if self.prefix is not None and not req.prefilled:
                    req.hit = self.prefix.lookup(req.prompt)
                    req.prefilled = len(req.hit) * self.prefix.block
                    plan.prefix_cached_tokens += req.prefilled
                todo = len(req.prompt) - req.prefilled
                if pack and used + todo > budget:
                    break  # stays first in line; its prefix hit is kept for the next step
                self.waiting.popleft()
                req.slot = len(self.running) + len(pack)
                pack.append(req)
                used += todo
                length = longest
                if used >= budget:
                    break
            if not pack:
                return
            plan.reserve = (len(self.running) + len(pack), length)
            if len(pack) == 1 and len(pack[0].prompt) - pack[0].prefilled > budget:
                self.prefilling = pack[0]  # too long for this step: chunked from now on
                _advance(pack[0], RequestStatus.PREFILLING)
                plan.pack = [self._next_chunk(pack[0], budget)]
                return
            for req in pack:
                plan.pack.append(Chunk(req, req.slot, req.prefilled, req.prompt[req.prefilled :], True))
                req.prefilled = len(req.prompt)
                _advance(req, RequestStatus.RUNNING)
            self.running.extend(pack)

    def _remove(self, req: Request) -> None:
        """Free a slot, keeping running slots compact: the last one moves into the hole.

        A request being prefilled sits at a slot >= len(running) and is never moved here.
        """
        with self.cond:
            slot = self.running.index(req)
            last = len(self.running) - 1
            if slot != last:
                moved = self.running[last]
                self.slots.move(last, slot)
                if self.on_move is not None:
                    self.on_move(moved, last, slot)
                self.running[slot] = moved
                moved.slot = slot
            self.running.pop()
            self.slots.free(last)
