"""The inference engine: the worker loop that runs the scheduler's plans on a model runner, and the async client.

One worker thread owns the model. Each step it
  1. asks the Scheduler (scheduler.py) for a StepPlan: cancelled requests leave, the prompt being prefilled in
     chunks gets its next chunk, waiting requests are admitted within the token and KV-memory budgets,
  2. runs the plan's prefills on the ModelRunner (runners.py) and samples each new request's first token,
  3. runs one decode step for every running request together (one forward over the whole batch),
  4. samples per request (each with its own settings and seeded generator), streams text deltas,
     and retires finished requests, so requests join and leave the batch between decode steps.
Events go to each request's asyncio.Queue through the owning loop's call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch

from gpt_model import constrained
from gpt_model.checkpoint import Loaded, load_source
from gpt_model.engine_config import EngineConfig
from gpt_model.engine_stats import EngineStats, TokenRate
from gpt_model.kv_cache import PrefixCache
from gpt_model.output import OutputProcessor
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineHealth,
    EngineOverloaded,
    Finished,
    GenerationRequest,
    StreamEvent,
    Usage,
)
from gpt_model.request import Request
from gpt_model.runners import ModelRunner, open_runner
from gpt_model.sampling import make_generator
from gpt_model.scheduler import Chunk, Scheduler
from gpt_model.selection import check_params, pick
from gpt_model.tokenizer import StreamDecoder


class ModelEngine:
    """EngineClient backed by a real model with continuous batching."""

    def __init__(self, source: str, config: EngineConfig, loaded: Loaded | None = None):
        self.source, self.config = source, config
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if config.threads:  # CPU threads for torch; on a busy node fewer threads beat spinning ones
            torch.set_num_threads(config.threads)
        self._loaded = loaded or load_source(
            source, dtype=config.dtype, device=self.device, cache_dir=config.cache_dir, revision=config.revision
        )
        self.tokenizer = self._loaded.tokenizer
        self.model_id = self._loaded.model_id
        window = min(self._loaded.context_window, config.max_context_tokens or self._loaded.context_window)
        kv_bytes = int(config.kv_cache_budget_mb(str(self.device)) * 2**20)
        self._kv_budget_bytes = kv_bytes
        self._runner: ModelRunner = open_runner(self._loaded, config, window, kv_bytes)
        self.context_window = self._runner.max_len  # capped so that one request alone fits the KV cache budget
        self._output = OutputProcessor(
            self.tokenizer, self.context_window, lambda token: constrained.forced_logprob(token, self._table())
        )
        # prompts that start like earlier ones reuse their keys/values (default: a quarter of the KV budget)
        prefix_bytes = int(config.prefix_cache_budget_mb(str(self.device)) * 2**20)
        usable = prefix_bytes > 0 and config.prefix_block > 0 and self._runner.supports_prefix_cache
        self._prefix = PrefixCache(config.prefix_block, prefix_bytes) if usable else None
        self.stats = EngineStats()
        self._requests: dict[str, Request] = {}
        self._sched = Scheduler(
            self._runner,
            max_batch_size=config.max_batch_size,
            max_queue=config.max_queue,
            prefill_chunk=config.prefill_chunk,
            prefix=self._prefix,
            on_move=self._moved,
        )
        self._cond = self._sched.cond
        self._thread: threading.Thread | None = None
        self._stop = False
        self._rate = TokenRate()
        self._seen = torch.zeros(0, 0, dtype=torch.bool)  # [slots, vocab] for repetition penalty, from start()
        self._tokens: constrained.TokenTable | None = None  # built on the first constrained/logprobs request
        self.error: str | None = None

    # -- EngineClient --------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenizer.encode_chat(messages))

    def count_text_tokens(self, text: str) -> int:
        return len(self._encode_raw(text))

    def _encode_raw(self, text: str) -> list[int]:
        """A text completion's prompt; an empty one starts from the end-of-text token, as OpenAI's does."""
        ids = self.tokenizer.encode(text)
        if not ids:
            eos = self.tokenizer.hf.eos_token_id
            ids = [int(eos) if eos is not None else min(self.tokenizer.eos_token_ids or {0})]
        return ids

    def _table(self) -> constrained.TokenTable:
        if self._tokens is None:
            self._tokens = constrained.TokenTable(self.tokenizer, self._runner.vocab_size)
        return self._tokens

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._seen = torch.zeros(
            self.config.max_batch_size, self._runner.vocab_size, dtype=torch.bool, device=self._runner.device
        )
        self._stop = False
        self._thread = threading.Thread(target=self._work, name=f"engine-{self.model_id}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        await asyncio.to_thread(thread.join)
        self._thread = None
        for req in list(self._requests.values()):
            if not req.finished:
                self._finish(req, "cancelled")
        self._sched.clear()

    async def health(self) -> EngineHealth:
        ready = self._thread is not None and self._thread.is_alive()
        stats = self.snapshot()
        return EngineHealth(
            ready=ready,
            model_id=self.model_id,
            detail=self.error or "",
            queue_depth=stats.queue_depth,
            running=stats.running,
            kv_cache_usage=stats.kv_cache_usage,
        )

    async def submit(self, request: GenerationRequest) -> str:
        if self._thread is None:
            await self.start()
        if request.request_id in self._requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if request.raw:
            prompt = self._encode_raw("".join(m.content for m in request.messages))
        else:
            prompt = self.tokenizer.encode_chat(request.messages)
        if len(prompt) >= self.context_window:
            raise ContextTooLong(f"prompt takes {len(prompt)} tokens; the context window is {self.context_window}")
        params = request.params
        start = check_params(params, self._runner.vocab_size)
        budget = max(0, min(params.max_tokens, self.context_window - len(prompt)))
        req = Request(request.request_id, prompt, params, budget, asyncio.get_running_loop(), asyncio.Queue())
        req.json = start
        if not params.plain:
            await asyncio.to_thread(self._table)  # once per engine: every token's text and bytes
        if params.temperature > 0:
            req.generator = make_generator(params.seed, self._runner.device)
        req.decoder = StreamDecoder(self.tokenizer)
        with self._cond:
            if not self._sched.add(req):
                self.stats.requests_rejected += 1
                raise EngineOverloaded(f"{len(self._sched.waiting)} requests are waiting; try again later")
            self._requests[req.request_id] = req
            self.stats.requests_total += 1
        if budget == 0:
            self.cancel_nowait(req, "length")
        return req.request_id

    async def stream(self, request_id: str) -> AsyncIterator[StreamEvent]:
        req = self._requests.get(request_id)
        if req is None:
            raise KeyError(request_id)
        try:
            while True:
                event = await req.queue.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if req.closed:
                self._requests.pop(request_id, None)

    async def cancel(self, request_id: str) -> None:
        req = self._requests.get(request_id)
        if req is None:
            return
        if req.closed:
            self._requests.pop(request_id, None)
            return
        self.cancel_nowait(req, "cancelled")

    def cancel_nowait(self, req: Request, reason: str) -> None:
        """Finish a request from the loop thread; the worker frees its slot before the next step."""
        with self._cond:
            self._sched.cancel(req, reason)
            if reason == "cancelled":
                self.stats.requests_cancelled += 1
        self._deliver(req, Finished(reason, Usage(len(req.prompt), len(req.generated))))  # type: ignore[arg-type]

    def snapshot(self) -> EngineStats:
        """Counters plus queue depth, running requests and recent tokens/s."""
        with self._cond:
            s = EngineStats(**vars(self.stats))
            s.queue_depth, s.running = len(self._sched.waiting), len(self._sched.running)
            s.kv_cache_mb = self._runner.kv_cache_bytes() / 2**20
            s.kv_cache_budget_mb = self._kv_budget_bytes / 2**20
            if self._prefix is not None:
                s.prefix_cache_mb = self._prefix.bytes / 2**20
        s.tokens_per_s = self._rate.per_second()
        return s

    # -- delivery (loop thread) ----------------------------------------------------------------

    def _deliver(self, req: Request, event: StreamEvent) -> None:
        if req.closed:
            return
        if isinstance(event, Finished):
            req.closed = True
        req.queue.put_nowait(event)

    def _emit(self, req: Request, event: StreamEvent) -> None:
        try:
            req.loop.call_soon_threadsafe(self._deliver, req, event)
        except RuntimeError:  # the loop is closed: nobody is listening
            req.finish("cancelled")

    def _finish(self, req: Request, reason: str, error: str | None = None) -> None:
        req.finish(reason)
        self.stats.requests_finished += 1
        self._emit(req, Finished(reason, Usage(len(req.prompt), len(req.generated)), error))  # type: ignore[arg-type]

    # -- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._stop and not self._sched.has_work:
                    self._runner.idle()  # nothing to do: give the KV cache memory back
                    self._cond.wait()
                if self._stop:
                    return
            try:
                self._step()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                for req in self._sched.fail_all():
                    self._finish(req, "error", self.error)

    def _step(self) -> None:
        runner = self._runner
        plan = self._sched.schedule()
        self.stats.prefix_cached_tokens_total += plan.prefix_cached_tokens
        if plan.chunk is not None:  # a long prompt, one chunk per step
            self._prefill_chunk(plan.chunk)
        if plan.reserve is not None:
            runner.reserve(*plan.reserve)
        for c in plan.pack:  # cached prefixes go straight into their slots
            r = c.request
            if r.hit:
                runner.load_prefix(r.slot, *PrefixCache.joined(r.hit))
                r.hit = []
        if plan.pack_chunked:  # too long for this step: chunked from now on
            self._prefill_chunk(plan.pack[0])
        elif plan.pack:  # whole prompts that fit the budget, packed into one forward
            pack = [c.request for c in plan.pack]
            logits = runner.prefill_many(
                [c.slot for c in plan.pack], [c.tokens for c in plan.pack], [c.start for c in plan.pack]
            )
            self.stats.prompt_tokens_total += sum(len(c.tokens) for c in plan.pack)
            for r in pack:
                self._prompt_in(r)
            sampled = pick(pack, logits, self._seen[pack[0].slot : pack[0].slot + len(pack)], self._table)
            for r, token in zip(pack, sampled, strict=True):
                self._accept(r, r.slot, token)
        # one decode step for every running request together
        ready = self._sched.decode_batch()
        if not ready:
            return
        n = len(ready)
        tokens = [r.generated[-1] for r in ready]
        positions = [r.position for r in ready]
        logits = runner.decode(tokens, positions, self._sched.prefilling is None)
        self.stats.decode_steps += 1
        sampled = pick(ready, logits, self._seen[:n], self._table)
        for slot, (req, token) in enumerate(zip(ready, sampled, strict=True)):
            self._accept(req, slot, token)
        self._rate.record(n)
        self._sched.drop_finished()

    def _prefill_chunk(self, chunk: Chunk) -> None:
        """Prefill a chunk of a long prompt; after the last one the request samples its first token."""
        req = chunk.request
        logits = self._runner.prefill(chunk.slot, chunk.tokens, chunk.start)
        self.stats.prompt_tokens_total += len(chunk.tokens)
        if not chunk.last:
            return
        if chunk.slot != req.slot:  # it joins the running requests at the end
            self._runner.move(chunk.slot, req.slot)
        self._prompt_in(req)
        token = pick([req], logits[None], self._seen[req.slot : req.slot + 1], self._table)[0]
        self._accept(req, req.slot, token)

    def _moved(self, req: Request, src: int, dst: int) -> None:
        """A running request moved slots: its seen tokens go along."""
        if req.params.repetition_penalty != 1.0:
            self._seen[dst] = self._seen[src]

    def _prompt_in(self, req: Request) -> None:
        """A prompt is all in its slot: its tokens count as seen, its blocks go into the prefix cache."""
        if req.params.repetition_penalty != 1.0:  # only then are the seen tokens tracked
            self._seen[req.slot].zero_()
            self._seen[req.slot, torch.tensor(req.prompt, device=self._seen.device)] = True
        if self._prefix is not None:
            self._prefix.insert(req.prompt, *self._runner.prefix_of(req.slot, len(req.prompt)))

    def _accept(self, req: Request, slot: int, token: int) -> None:
        """Take a request's sampled token (-2: its selection failed): send the text it adds, finish it when done."""
        if req.finished:
            return
        if token == -2:
            self._finish(req, "error", req.failure)
            return
        if token >= 0 and req.params.repetition_penalty != 1.0:
            self._seen[slot, token] = True
        out = self._output.accept(req, token)
        self.stats.generated_tokens_total += out.tokens
        for delta in out.deltas:
            self._emit(req, delta)
        if out.finish is not None:
            self._finish(req, out.finish)


def open_model_engine(source: str, **options: Any) -> ModelEngine:
    """An unstarted engine for a real model source; `options` are EngineConfig's (None: the default; an unknown
    one is a TypeError, a bad value a ValueError, both naming it)."""
    return ModelEngine(source, EngineConfig.from_options(**options))
