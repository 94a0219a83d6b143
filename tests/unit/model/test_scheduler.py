"""The scheduler without a model (as vLLM's tests/v1/core/test_scheduler.py): admission, the token and memory
budgets, chunked prefill, cancellation and slot compaction, against a fake runner that records what it is asked."""

import subprocess
import sys

import pytest
from gpt_model.protocol import SamplingParams
from gpt_model.request import Request, RequestStatus
from gpt_model.scheduler import Scheduler

pytestmark = pytest.mark.unit


class FakeSlots:
    """A KV cache of `budget` token slots in all (None: unlimited); records moves and frees."""

    def __init__(self, budget: int | None = None):
        self.budget = budget
        self.moves: list[tuple[int, int]] = []
        self.freed: list[int] = []

    def fits(self, slots: int, length: int) -> bool:
        return self.budget is None or slots * length <= self.budget

    def move(self, src: int, dst: int) -> None:
        self.moves.append((src, dst))

    def free(self, slot: int) -> None:
        self.freed.append(slot)


class FakePrefix:
    """A prefix cache that knows the first `cached` blocks of every prompt."""

    def __init__(self, block: int, cached: int):
        self.block, self.cached = block, cached

    def lookup(self, tokens):
        return [f"block{i}" for i in range(min(self.cached, (len(tokens) - 1) // self.block))]


def request(rid: str, prompt: int, max_tokens: int = 10) -> Request:
    return Request(rid, list(range(prompt)), SamplingParams(max_tokens=max_tokens), max_tokens, None, None)


def scheduler(slots=None, **kw) -> Scheduler:
    options = {"max_batch_size": 8, "max_queue": 16, "prefill_chunk": 64, **kw}
    return Scheduler(slots or FakeSlots(), **options)


def added(s: Scheduler, *reqs: Request) -> list[Request]:
    for r in reqs:
        assert s.add(r)
    return list(reqs)


def test_the_scheduling_modules_import_no_torch():
    code = (
        "import sys\n"
        "import gpt_model.scheduler, gpt_model.request, gpt_model.stops, gpt_model.output, gpt_model.engine_stats\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_waiting_requests_are_admitted_first_come_first_served_into_consecutive_slots():
    s = scheduler()
    a, b, c = added(s, request("a", 5, 10), request("b", 7, 20), request("c", 3, 1))
    plan = s.schedule()
    assert [(ch.request.request_id, ch.slot, ch.start, len(ch.tokens), ch.last) for ch in plan.pack] == [
        ("a", 0, 0, 5, True),
        ("b", 1, 0, 7, True),
        ("c", 2, 0, 3, True),
    ]
    assert plan.chunk is None and not plan.pack_chunked
    assert plan.reserve == (3, 27)  # three slots, each up to the longest prompt + max_tokens
    assert s.running == [a, b, c] and not s.waiting
    assert all(r.status is RequestStatus.RUNNING and r.prefilled == len(r.prompt) for r in (a, b, c))
    assert s.decode_batch() == [a, b, c]


def test_whole_prompts_are_packed_within_the_token_budget_and_the_next_one_waits_its_turn():
    s = scheduler(prefill_chunk=10)
    a, b, c, d = added(s, request("a", 4), request("b", 4), request("c", 4), request("d", 2))
    plan = s.schedule()
    assert [ch.request for ch in plan.pack] == [a, b]  # 8 tokens; c's 4 more would pass 10
    assert list(s.waiting) == [c, d] and c.status is RequestStatus.WAITING
    plan = s.schedule()
    assert [ch.request for ch in plan.pack] == [c, d] and [ch.slot for ch in plan.pack] == [2, 3]
    assert s.running == [a, b, c, d]


def test_a_full_batch_and_a_full_queue():
    s = scheduler(max_batch_size=2, max_queue=2)
    a, b = added(s, request("a", 3), request("b", 3))
    assert not s.add(request("refused", 3))
    s.schedule()
    c = request("c", 3)
    assert s.add(c)
    assert s.schedule().pack == [] and list(s.waiting) == [c] and s.running == [a, b]  # both slots taken
    assert s.counts() == (1, 2)


def test_a_request_waits_while_the_kv_cache_would_exceed_its_memory_budget():
    slots = FakeSlots(budget=100)  # two requests of 50 tokens each, or one of 100
    s = scheduler(slots)
    a, b, c = added(s, request("a", 10, 40), request("b", 20, 30), request("c", 30, 60))
    plan = s.schedule()
    assert [ch.request for ch in plan.pack] == [a, b] and plan.reserve == (2, 50)
    assert list(s.waiting) == [c]  # three slots of 90 tokens do not fit
    a.finish("stop")
    s.drop_finished()
    assert s.schedule().pack == [] and list(s.waiting) == [c]  # 2 x 90 still does not fit beside b
    b.finish("length")
    plan = s.schedule()
    assert [ch.request for ch in plan.pack] == [c] and plan.reserve == (1, 90)  # alone it always goes in
    assert c.slot == 0


def test_one_long_prompt_is_prefilled_in_chunks_and_nothing_else_is_admitted_meanwhile():
    s = scheduler(prefill_chunk=8)
    long, short = added(s, request("long", 20), request("short", 3))
    plan = s.schedule()
    assert plan.pack_chunked and plan.reserve == (1, 30)
    first = plan.pack[0]
    assert (first.request, first.slot, first.start, first.tokens, first.last) == (long, 0, 0, list(range(8)), False)
    assert s.prefilling is long and long.status is RequestStatus.PREFILLING and s.running == []
    assert s.counts() == (1, 1)

    plan = s.schedule()
    assert (plan.chunk.start, plan.chunk.tokens, plan.chunk.last) == (8, list(range(8, 16)), False)
    assert plan.pack == [] and list(s.waiting) == [short]  # the budget went to the chunk

    plan = s.schedule()  # the last 4 tokens; the other 4 of the budget admit the short prompt
    assert (plan.chunk.start, plan.chunk.tokens, plan.chunk.last) == (16, [16, 17, 18, 19], True)
    assert s.prefilling is None and long.status is RequestStatus.RUNNING and long.slot == 0
    assert [(ch.request, ch.slot) for ch in plan.pack] == [(short, 1)]
    assert s.decode_batch() == [long, short]


def test_a_finished_chunked_prompt_moves_down_to_the_first_free_running_slot():
    s = scheduler(prefill_chunk=8)
    a, b = added(s, request("a", 2), request("b", 2))
    s.schedule()
    long = added(s, request("long", 12))[0]
    s.schedule()
    assert s.prefilling is long and long.slot == 2
    a.finish("stop")
    b.finish("stop")
    s.drop_finished()
    plan = s.schedule()
    assert plan.chunk.slot == 2 and plan.chunk.last and long.slot == 0  # the engine moves slot 2 -> 0
    assert s.running == [long]


def test_cached_prefix_blocks_are_skipped_and_counted():
    s = Scheduler(FakeSlots(), max_batch_size=4, max_queue=4, prefill_chunk=64, prefix=FakePrefix(block=4, cached=2))
    a = added(s, request("a", 11))[0]
    plan = s.schedule()
    assert plan.prefix_cached_tokens == 8 and a.hit == ["block0", "block1"]
    assert (plan.pack[0].start, plan.pack[0].tokens) == (8, [8, 9, 10])


def test_cancelling_a_waiting_request_takes_it_out_of_the_queue():
    s = scheduler()
    a = added(s, request("a", 3))[0]
    s.cancel(a)
    assert a.status is RequestStatus.FINISHED_CANCELLED and not s.waiting
    assert s.schedule().pack == [] and s.running == []


def test_cancelling_the_prompt_being_prefilled_frees_its_slot_before_the_next_step():
    slots = FakeSlots()
    s = scheduler(slots, prefill_chunk=4)
    long = added(s, request("long", 10))[0]
    s.schedule()
    s.cancel(long)
    plan = s.schedule()
    assert plan.chunk is None and s.prefilling is None and slots.freed == [0]
    assert long.status is RequestStatus.FINISHED_CANCELLED  # a later step does not revive it
    assert not s.has_work


def test_cancelling_a_running_request_compacts_the_slots():
    slots = FakeSlots()
    moved = []
    s = Scheduler(
        slots, max_batch_size=8, max_queue=8, prefill_chunk=64, on_move=lambda r, src, dst: moved.append((r, src, dst))
    )
    a, b, c = added(s, request("a", 3), request("b", 3), request("c", 3))
    s.schedule()
    s.cancel(a, "cancelled")
    s.schedule()
    assert slots.moves == [(2, 0)] and slots.freed == [2] and moved == [(c, 2, 0)]
    assert s.running == [c, b] and (c.slot, b.slot) == (0, 1)
    b.finish("stop")  # the last one leaves: nothing moves
    assert s.decode_batch() == [c] and slots.moves == [(2, 0)] and slots.freed == [2, 1]


def test_a_cancel_is_never_overwritten_and_a_failed_step_hands_back_every_request_in_flight():
    s = scheduler(prefill_chunk=4)
    a, long = added(s, request("a", 2), request("long", 10))
    s.schedule()
    s.schedule()
    assert s.prefilling is long and a.status is RequestStatus.RUNNING
    a.finish("stop")
    a.finish("cancelled")
    assert a.status is RequestStatus.FINISHED_STOPPED
    assert s.fail_all() == [a, long] and s.running == [] and s.prefilling is None
