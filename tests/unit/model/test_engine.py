"""The engine on the tiny built-in model: streaming, batching, cancellation, limits."""

import asyncio
import os
import time

import pytest
import torch
from gpt_model.engine import ModelEngine, open_model_engine
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineClient,
    EngineOverloaded,
    Finished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    collect,
)

pytestmark = pytest.mark.unit

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def run(coro):
    return asyncio.run(coro)


DEVICE = os.environ.get("GPT_TEST_DEVICE", "cpu")  # GPT_TEST_DEVICE=cuda runs these on a GPU


def engine(**kw) -> ModelEngine:
    e = open_model_engine("builtin:tiny", device=DEVICE, **kw)
    e.tokenizer.eos_token_ids = frozenset()  # random weights: never stop early, lengths are exact
    return e


def msgs(text: str):
    return [ChatMessage("user", text)]


async def events(e, rid):
    return [ev async for ev in e.stream(rid)]


def test_implements_the_client_protocol_and_streams_deltas_then_one_finished():
    async def main():
        e = engine()
        assert isinstance(e, EngineClient)
        await e.start()
        rid = await e.submit(GenerationRequest("r1", msgs("hello"), GREEDY))
        evs = await events(e, rid)
        await e.close()
        return e, evs

    e, evs = run(main())
    assert all(isinstance(ev, TextDelta) for ev in evs[:-1]) and isinstance(evs[-1], Finished)
    fin = evs[-1]
    assert fin.finish_reason == "length"
    assert fin.usage.completion_tokens == 24
    assert fin.usage.prompt_tokens == e.count_prompt_tokens(msgs("hello"))
    assert len("".join(ev.text for ev in evs[:-1]).encode()) > 0


def test_batched_greedy_equals_each_request_alone_and_the_model():
    prompts = [f"prompt number {i} " * (i + 1) for i in range(6)]
    lengths = [5, 30, 12, 1, 20, 8]  # requests leave the batch at different steps

    async def main():
        e = engine(max_batch_size=4)
        solo = [
            await collect(e, GenerationRequest(f"s{i}", msgs(p), SamplingParams(temperature=0, max_tokens=n)))
            for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
        ]
        together = await asyncio.gather(
            *[
                collect(e, GenerationRequest(f"b{i}", msgs(p), SamplingParams(temperature=0, max_tokens=n)))
                for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
            ]
        )
        await e.close()
        return e, solo, together

    e, solo, together = run(main())
    assert [t for t, _ in solo] == [t for t, _ in together]
    assert [f.usage.completion_tokens for _, f in together] == lengths
    # the engine's tokens are exactly the model's own greedy continuation
    ids = e.tokenizer.encode_chat(msgs(prompts[1]))
    out = e._loaded.model.generate(torch.tensor([ids], device=DEVICE), 30)[0, len(ids) :].tolist()
    assert e.tokenizer.decode(out) == solo[1][0]


def test_seeded_sampling_is_reproducible_through_the_engine():
    def params(seed):
        return SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=seed, max_tokens=20)

    async def main():
        e = engine()
        a = await collect(e, GenerationRequest("a", msgs("hi"), params(7)))
        b, c = await asyncio.gather(
            collect(e, GenerationRequest("b", msgs("hi"), params(7))),
            collect(e, GenerationRequest("c", msgs("hi"), params(8))),
        )
        await e.close()
        return a[0], b[0], c[0]

    a, b, c = run(main())
    assert a == b != c


def test_stop_sequence_cuts_the_reply_before_it():
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=40)

    async def main():
        e = engine()
        full, _ = await collect(e, GenerationRequest("a", msgs("x"), params))
        stop = next(full[i : i + 2] for i in range(5, len(full) - 2) if "\ufffd" not in full[i : i + 2])
        cut, fin = await collect(
            e,
            GenerationRequest(
                "b", msgs("x"), SamplingParams(temperature=1.0, seed=3, max_tokens=40, stop=(stop, "never-seen-stop"))
            ),
        )
        await e.close()
        return full, stop, cut, fin

    full, stop, cut, fin = run(main())
    assert cut == full[: full.index(stop)]
    assert fin.finish_reason == "stop"


def test_cancel_ends_the_stream_frees_the_slot_and_ignores_unknown_ids():
    async def main():
        e = engine()
        await e.cancel("nobody")  # no-op
        rid = await e.submit(GenerationRequest("long", msgs("go"), SamplingParams(temperature=0, max_tokens=900)))
        seen = []
        async for ev in e.stream(rid):
            seen.append(ev)
            if len(seen) == 3:
                await e.cancel(rid)
        await asyncio.sleep(0.05)
        health = await e.health()
        await e.cancel(rid)  # again: still a no-op
        await e.close()
        return seen, health

    seen, health = run(main())
    assert isinstance(seen[-1], Finished) and seen[-1].finish_reason == "cancelled"
    assert sum(isinstance(ev, Finished) for ev in seen) == 1
    assert len(seen) <= 6
    assert health.running == 0 and health.queue_depth == 0


def test_cancel_while_waiting_in_the_queue():
    async def main():
        e = engine(max_batch_size=1)
        first = await e.submit(GenerationRequest("a", msgs("a"), SamplingParams(temperature=0, max_tokens=300)))
        second = await e.submit(GenerationRequest("b", msgs("b"), SamplingParams(temperature=0, max_tokens=300)))
        await e.cancel(second)
        evs = await events(e, second)
        await e.cancel(first)
        await e.close()
        return evs

    evs = run(main())
    assert evs == [evs[-1]] and evs[-1].finish_reason == "cancelled"


def test_context_too_long_and_length_capped_by_the_window():
    async def main():
        e = engine(max_context_tokens=40)
        assert e.context_window == 40
        with pytest.raises(ContextTooLong):
            await e.submit(GenerationRequest("a", msgs("x" * 100), GREEDY))
        n = e.count_prompt_tokens(msgs("abc"))
        _, fin = await collect(e, GenerationRequest("b", msgs("abc"), SamplingParams(temperature=0, max_tokens=500)))
        await e.close()
        return n, fin

    n, fin = run(main())
    assert fin.finish_reason == "length" and fin.usage.completion_tokens == 40 - n


def test_bounded_queue_rejects_when_full():
    async def main():
        e = engine(max_batch_size=1, max_queue=2)
        await e.start()
        ids, rejected = [], 0
        for i in range(6):
            try:
                ids.append(await e.submit(GenerationRequest(f"r{i}", msgs("q"), SamplingParams(max_tokens=200))))
            except EngineOverloaded:
                rejected += 1
        stats = e.snapshot()
        for rid in ids:
            await e.cancel(rid)
        await e.close()
        return rejected, stats

    rejected, stats = run(main())
    assert rejected >= 3 and stats.requests_rejected == rejected


def test_continuous_batching_is_fair_and_short_requests_do_not_wait_for_long_ones():
    async def main():
        e = engine(max_batch_size=8)
        order: list[str] = []
        done_at: dict[str, float] = {}
        long_started = asyncio.Event()

        async def consume(rid):
            deltas = 0
            async for ev in e.stream(rid):
                if isinstance(ev, TextDelta):
                    deltas += 1
                    if deltas == 5 and rid == "long":
                        long_started.set()
                else:
                    order.append(rid)
                    done_at[rid] = time.perf_counter()
                    return ev

        long_id = await e.submit(GenerationRequest("long", msgs("l"), SamplingParams(temperature=0, max_tokens=400)))
        long_task = asyncio.create_task(consume(long_id))
        await long_started.wait()
        t0 = time.perf_counter()
        equal = [
            await e.submit(GenerationRequest(f"eq{i}", msgs(f"same {i}"), SamplingParams(temperature=0, max_tokens=60)))
            for i in range(4)
        ]
        finals = await asyncio.gather(*[consume(r) for r in equal])
        await long_task
        stats = e.snapshot()
        await e.close()
        return order, t0, done_at, finals, stats

    order, t0, done_at, finals, stats = run(main())
    assert order[-1] == "long"  # the 60-token requests joined the running batch and left first
    assert all(f.finish_reason == "length" and f.usage.completion_tokens == 60 for f in finals)
    # decoded side by side, one token each per step: they finish together, not one after another
    ends = [done_at[f"eq{i}"] - t0 for i in range(4)]
    assert max(ends) - min(ends) < 0.3 * min(ends)
    assert stats.decode_steps < 400 + 60  # shared steps, not one request after another
    assert stats.requests_total == 5 and stats.generated_tokens_total == 400 + 4 * 60


def test_time_to_first_token_on_tiny_is_small():
    async def main():
        e = engine()
        await e.start()
        await collect(e, GenerationRequest("warm", msgs("w"), SamplingParams(temperature=0, max_tokens=2)))
        t0 = time.perf_counter()
        rid = await e.submit(GenerationRequest("t", msgs("what is up?"), GREEDY))
        first = None
        async for _ in e.stream(rid):
            if first is None:
                first = time.perf_counter() - t0
        await e.close()
        return first

    assert run(main()) < 0.5


def test_repetition_penalty_changes_greedy_output_and_stops_repeats():
    async def main():
        e = engine()
        plain, f1 = await collect(
            e, GenerationRequest("a", msgs("hello"), SamplingParams(temperature=0, max_tokens=20))
        )
        penalised, f2 = await collect(
            e,
            GenerationRequest(
                "b", msgs("hello"), SamplingParams(temperature=0, max_tokens=20, repetition_penalty=1000.0)
            ),
        )
        await e.close()
        assert f1.finish_reason == f2.finish_reason == "length"
        return plain, penalised

    plain, penalised = run(main())
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself greedily
    chars = [c for c in penalised if c != "\ufffd"]
    assert plain != penalised and len(set(chars)) == len(chars)


def test_long_prompts_are_prefilled_in_chunks_between_decode_steps():
    prompts = ["a fairly long prompt " * 6, "short", "another long prompt here " * 5]

    async def main():
        e = engine(prefill_chunk=16)
        outs = await asyncio.gather(
            *[
                collect(e, GenerationRequest(f"r{i}", msgs(p), SamplingParams(temperature=0, max_tokens=6)))
                for i, p in enumerate(prompts)
            ]
        )
        stats = e.snapshot()
        await e.close()
        return e, outs, stats

    e, outs, stats = run(main())
    for p, (text, fin) in zip(prompts, outs, strict=True):
        ids = e.tokenizer.encode_chat(msgs(p))
        assert len(ids) > 16 or p == "short"
        expected = e._loaded.model.generate(torch.tensor([ids], device=DEVICE), 6)[0, len(ids) :].tolist()
        assert text == e.tokenizer.decode(expected) and fin.finish_reason == "length"
    total = sum(len(e.tokenizer.encode_chat(msgs(p))) for p in prompts)
    assert stats.prompt_tokens_total + stats.prefix_cached_tokens_total == total


def test_registry_opens_real_sources_with_runtime_options_and_refuses_unknown_ones():
    from gpt_model.registry import open_engine

    with pytest.raises(TypeError, match="something_new"):
        open_engine("builtin:tiny", something_new=1)
    with pytest.raises(TypeError, match="something_new"):
        open_model_engine("builtin:tiny", something_new=1)
    e = open_engine("builtin:tiny", dtype="bfloat16", max_context_tokens=64, cache_dir=None, api_key=None)
    assert isinstance(e, ModelEngine) and e.context_window == 64 and e.model_id == "builtin-tiny"
    assert next(e._loaded.model.parameters()).dtype == torch.bfloat16

    async def main():
        out = await collect(e, GenerationRequest("r", msgs("hi"), SamplingParams(temperature=0, max_tokens=5)))
        await e.close()
        return out

    _, fin = run(main())
    assert fin.finish_reason in ("length", "stop") and fin.usage.completion_tokens >= 1


def test_unknown_sources_fail_clearly():
    with pytest.raises(ValueError, match="unknown builtin"):
        open_model_engine("builtin:nope")
    with pytest.raises(ValueError, match="not a builtin"):
        open_model_engine("/no/such/dir")


def test_kv_cache_budget_limits_concurrency_and_the_context_window():
    # tiny: 2 layers x 2 kv heads x 16 dims x (k, v) x 4 bytes = 512 bytes per token
    small = engine(kv_cache_mb=0.25)
    assert small.context_window == 512  # one request alone must fit in 256 KiB

    async def main():
        e = engine(kv_cache_mb=1.0)  # 2048 tokens: four requests of up to 512 tokens at once
        assert e.context_window == 1024
        peak = 0

        async def one(i):
            nonlocal peak
            rid = await e.submit(
                GenerationRequest(f"r{i}", msgs(f"n{i}"), SamplingParams(temperature=0, max_tokens=300))
            )
            async for ev in e.stream(rid):
                peak = max(peak, (await e.health()).running)
                assert e.snapshot().kv_cache_mb <= 1.0
                last = ev
            return last

        finals = await asyncio.gather(*[one(i) for i in range(6)])
        await asyncio.sleep(0.05)
        idle = e.snapshot()
        await e.close()
        return finals, peak, idle

    finals, peak, idle = run(main())
    assert [f.usage.completion_tokens for f in finals] == [300] * 6
    assert 2 <= peak <= 4
    assert idle.kv_cache_mb == 0  # released when idle


def test_kv_cache_usage_is_what_running_requests_hold_of_the_budget():
    async def main():
        e = engine(kv_cache_mb=1.0)
        rid = await e.submit(GenerationRequest("kv", msgs("hello"), SamplingParams(temperature=0, max_tokens=100)))
        during, health_during = [], []
        async for _ in e.stream(rid):
            during.append(e.snapshot())
            health_during.append(await e.health())  # what /metrics publishes as vllm:kv_cache_usage_perc
        await asyncio.sleep(0.05)
        idle, health_idle = e.snapshot(), await e.health()
        await e.close()
        return during, idle, health_during, health_idle

    during, idle, health_during, health_idle = run(main())
    assert all(s.kv_cache_budget_mb == 1.0 for s in during)
    # a slot of 256 tokens x 512 bytes = 128 KiB of the 1 MiB budget
    assert max(s.kv_cache_usage for s in during) == pytest.approx(0.125)
    assert max(h.kv_cache_usage for h in health_during) == pytest.approx(0.125)
    assert idle.kv_cache_usage == 0 and health_idle.kv_cache_usage == 0
    assert not health_idle.separate  # the built-in engine's queue counts are its own


def test_a_long_request_waits_for_room_then_runs_with_the_cache_reshaped_under_budget():
    long_prompt = "long context " * 50

    async def main():
        e = engine(kv_cache_mb=1.0, prefill_chunk=256)
        over = False

        async def one(rid, text, n):
            nonlocal over
            await e.submit(GenerationRequest(rid, msgs(text), SamplingParams(temperature=0, max_tokens=n)))
            parts = []
            async for ev in e.stream(rid):
                over = over or e.snapshot().kv_cache_mb > 1.0
                if isinstance(ev, TextDelta):
                    parts.append(ev.text)
                else:
                    return "".join(parts), ev

        lengths = [300, 40, 40, 40]  # one keeps running (and its cache is kept) when the long one joins
        shorts = [asyncio.create_task(one(f"s{i}", f"short {i}", n)) for i, n in enumerate(lengths)]
        await asyncio.sleep(0.01)
        long = await one("long", long_prompt, 300)
        done = await asyncio.gather(*shorts)
        await e.close()
        return e, long, done, over

    e, (text, fin), done, over = run(main())
    assert not over
    assert fin.usage.completion_tokens == 300 and [f.usage.completion_tokens for _, f in done] == [300, 40, 40, 40]
    ids = e.tokenizer.encode_chat(msgs(long_prompt))
    assert len(ids) + 300 > 512  # needs more room than the short ones' 512-token slots
    for prompt, got in ((long_prompt, text), ("short 0", done[0][0])):
        ids = e.tokenizer.encode_chat(msgs(prompt))
        expected = e._loaded.model.generate(torch.tensor([ids], device=DEVICE), 300)[0, len(ids) :].tolist()
        assert got == e.tokenizer.decode(expected)


def test_a_failing_step_fails_its_requests_with_an_error_and_the_engine_keeps_serving():
    async def main():
        e = engine()
        await e.start()
        real_decode, calls = e._runner.decode, {"n": 0}

        def flaky(*args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("device fell over")
            return real_decode(*args)

        e._runner.decode = flaky
        _, failed = await collect(e, GenerationRequest("a", msgs("x"), SamplingParams(temperature=0, max_tokens=10)))
        _, ok = await collect(e, GenerationRequest("b", msgs("x"), SamplingParams(temperature=0, max_tokens=10)))
        health = await e.health()
        await e.close()
        return failed, ok, health

    failed, ok, health = run(main())
    assert failed.finish_reason == "error" and "device fell over" in failed.error
    assert ok.finish_reason == "length" and ok.usage.completion_tokens == 10
    assert health.ready and "device fell over" in health.detail


def test_close_ends_every_open_stream_once():
    async def main():
        e = engine(max_batch_size=1)
        ids = [await e.submit(GenerationRequest(f"r{i}", msgs("x"), SamplingParams(max_tokens=900))) for i in range(3)]
        consumers = [asyncio.create_task(events(e, rid)) for rid in ids]
        await asyncio.sleep(0.05)
        await e.close()
        return await asyncio.gather(*consumers)

    for evs in run(main()):
        finished = [ev for ev in evs if isinstance(ev, Finished)]
        assert len(finished) == 1 and finished[0].finish_reason in ("cancelled", "length", "stop")
        assert evs[-1] is finished[0]


def test_prefix_cache_reuses_earlier_turns_and_changes_nothing_in_the_output():
    system = ChatMessage("system", "You are a careful assistant who answers in one short sentence. " * 2)
    first = [system, ChatMessage("user", "Tell me about the sea.")]

    async def conversation(e):
        reply, _ = await collect(e, GenerationRequest("t1", first, SamplingParams(temperature=0, max_tokens=12)))
        second = [*first, ChatMessage("assistant", reply), ChatMessage("user", "And the mountains?")]
        others = [[system, ChatMessage("user", f"Question {i}?")] for i in range(3)]  # share only the system turn
        outs = await asyncio.gather(
            *[
                collect(e, GenerationRequest(f"t2-{i}", m, SamplingParams(temperature=0, max_tokens=12)))
                for i, m in enumerate([second, *others])
            ]
        )
        stats = e.snapshot()
        await e.close()
        return [reply, *(t for t, _ in outs)], stats

    with_cache, stats = run(conversation(engine()))
    without, plain = run(conversation(engine(prefix_cache_mb=0)))
    assert with_cache == without
    assert plain.prefix_cached_tokens_total == 0
    first_len = len(engine().tokenizer.encode_chat(first))
    # the second turn reused (almost) the whole first prompt; the others at least the system turn
    assert stats.prefix_cached_tokens_total >= (first_len // 16) * 16 + 3 * 64
    assert stats.prompt_tokens_total < plain.prompt_tokens_total


def test_prefix_cache_stays_within_its_budget():
    async def main():
        e = engine(prefix_cache_mb=0.05)  # 52 KB: a few blocks of 16 tokens x 512 bytes
        for i in range(6):
            await collect(
                e, GenerationRequest(f"r{i}", msgs(f"{i} " * 120), SamplingParams(temperature=0, max_tokens=2))
            )
        stats = e.snapshot()
        entries = len(e._prefix.entries)
        await e.close()
        return stats, entries

    stats, entries = run(main())
    assert 0 < stats.prefix_cache_mb <= 0.05 and entries == int(0.05 * 2**20) // (16 * 512)


def test_weight_copies_serve_decode_steps_with_the_same_greedy_text():
    """GPT_MODEL_SMALL_BATCH_DTYPE=float16: decode steps of <= small_batch_rows streams read a float16 copy of the
    weights, GPT_MODEL_PACKED_WEIGHTS larger ones a oneDNN-packed copy; a greedy request's text is that of the
    plain float32 engine (the tiny model's margins are wide)."""
    greedy = SamplingParams(temperature=0, max_tokens=16)
    prompts = ["tell me a story", "what is a prime number", "describe the sea", "name three colours"]

    async def texts(e, n):  # n requests at once: decode steps of n rows
        await e.start()
        rids = [await e.submit(GenerationRequest(f"r{i}", msgs(p), greedy)) for i, p in enumerate(prompts[:n])]
        out = ["".join(ev.text for ev in (await events(e, rid))[:-1]) for rid in rids]
        await e.close()
        return out

    plain, fast = engine(), engine(small_batch_dtype="float16", small_batch_rows=2, packed_weights=True)
    model = fast._loaded.model
    copies = [m.small for m in model.modules() if hasattr(m, "small")]
    assert copies and all(c is not None and c.dtype == torch.float16 for c in copies)
    assert {m.small_rows for m in model.modules() if hasattr(m, "small")} == {2}
    # larger steps read the oneDNN-packed copy, for up to max_batch_size (32) rows
    assert {m.packed_rows for m in model.modules() if hasattr(m, "packed")} == {32}
    assert run(texts(fast, 1)) == run(texts(plain, 1))  # the float16 copy
    assert run(texts(fast, 4)) == run(texts(plain, 4))  # the packed copy


def test_int8_engine_serves_a_batch_with_int8_matmuls_only():
    """GPT_MODEL_QUANTIZE=int8: every matmul in int8 (gpt_model.quantize), the float32 matmul weights dropped; a
    batch of requests each gets its max_tokens tokens, greedy text as reproducible as the batch (fbgemm quantizes a
    step's input with one range for the whole batch)."""
    greedy = SamplingParams(temperature=0, max_tokens=12)
    prompts = ["tell me a story", "what is a prime number", "describe the sea"]

    async def finished(e):
        await e.start()
        rids = [await e.submit(GenerationRequest(f"r{i}", msgs(p), greedy)) for i, p in enumerate(prompts)]
        out = [await events(e, rid) for rid in rids]
        await e.close()
        return [("".join(ev.text for ev in evs[:-1]), evs[-1].usage.completion_tokens) for evs in out]

    int8 = engine(quantize="int8")
    model = int8._loaded.model
    linears = [m for m in model.modules() if hasattr(m, "int8")]
    assert linears and all(m.int8 is not None for m in linears)
    assert all(m.weight.numel() == 0 for m in linears if m.weight is not model.wte.weight)
    # the profiler does not see the engine's worker thread: count the int8 matmuls of one forward here
    with torch.inference_mode(), torch.profiler.profile() as prof:
        model(torch.tensor([[1, 2, 3]]))
    assert sum(e.count for e in prof.key_averages() if e.key == "quantized::linear_dynamic") == len(linears)
    # and the engine generates with them (the float32 weights it could have used are empty)
    first = run(finished(int8))
    assert all(text and tokens == 12 for text, tokens in first)
    assert run(finished(int8)) == first
