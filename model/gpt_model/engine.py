"""The inference engine: KV cache slots, sampling, a continuous-batching scheduler, async client.

One worker thread owns the model. Each iteration it
  1. drops cancelled requests (their slots are freed at once),
  2. admits waiting requests into free slots and prefills them (up to a token budget per
     iteration, so running streams keep flowing while long prompts arrive: the prefill/decode split),
  3. runs one decode step for every running request together (one forward over the whole batch),
  4. samples per request (each with its own settings and seeded generator), streams text deltas,
     and retires finished requests, so requests join and leave the batch between decode steps.
Events go to each request's asyncio.Queue through the owning loop's call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gpt_model import constrained
from gpt_model.checkpoint import Loaded, load_source
from gpt_model.gpt import causal_mask
from gpt_model.json_prefix import JSONPrefix, UnsupportedSchema, compile_schema
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineHealth,
    EngineOverloaded,
    Finished,
    GenerationRequest,
    InvalidParameter,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    Usage,
)
from gpt_model.sampling import (
    apply_logit_bias,
    apply_openai_penalties,
    apply_repetition_penalty,
    make_generator,
    sample_rows,
)
from gpt_model.tokenizer import StreamDecoder

log = logging.getLogger("gpt_model.engine")

# ---------------------------------------------------------------------------------------------
# KV cache slots


class SlotKVCache:
    """Keys/values of running sequences: [layers, slots, kv_heads, capacity, head_dim].

    Running requests occupy slots 0..n-1 (kept compact by moving the last one into a freed slot),
    so a decode step attends over a plain slice, no gather. The engine reserves room (slots and
    capacity) when it admits requests, within a memory budget, and releases it when idle.
    """

    def __init__(self, n_layer, n_kv_head, head_dim, max_slots, max_len, device, dtype):
        self.layers, self.heads, self.head_dim = n_layer, n_kv_head, head_dim
        self.max_slots, self.max_len = max_slots, max_len
        self.device, self.dtype = device, dtype
        self.token_bytes = n_layer * n_kv_head * head_dim * 2 * torch.empty(0, dtype=dtype).element_size()
        self.slots = self.capacity = 0
        self.version = 0  # bumped whenever k/v are reallocated
        self.k = self.v = torch.empty(0, device=device, dtype=dtype)
        self._mode: tuple = ()

    def plan(self, slots: int, length: int, exact: bool = False) -> tuple[int, int]:
        """The (slots, capacity) an allocation for `slots` sequences of up to `length` tokens gets:
        grown from the current one, or (exact) just big enough, which may shrink it."""
        s = 1
        while s < slots:
            s *= 2
        s, c = min(s, self.max_slots), min(256 * -(-max(length, 1) // 256), self.max_len)
        if exact:
            return s, c
        return max(self.slots, s), max(self.capacity, c)

    def bytes_for(self, slots: int, length: int, exact: bool = False) -> int:
        s, c = self.plan(slots, length, exact)
        return s * c * self.token_bytes

    def reserve(self, slots: int, length: int, budget: int | None = None) -> None:
        """Room for `slots` sequences of up to `length` tokens (every running sequence must be
        among the first `slots` and shorter than `length`). Grows; shrinks only to meet `budget`."""
        s, c = self.plan(slots, length)
        if budget is not None and s * c * self.token_bytes > budget:
            s, c = self.plan(slots, length, exact=True)
        if (s, c) == (self.slots, self.capacity):
            return
        shape = (self.layers, s, self.heads, c, self.head_dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros_like(k)
        keep_s, keep_c = min(s, self.slots), min(c, self.capacity)
        if keep_s and keep_c:
            k[:, :keep_s, :, :keep_c] = self.k[:, :keep_s, :, :keep_c]
            v[:, :keep_s, :, :keep_c] = self.v[:, :keep_s, :, :keep_c]
        self.k, self.v, self.slots, self.capacity = k, v, s, c
        self.version += 1

    def release(self) -> None:
        if not self.slots:
            return
        self.k = self.v = torch.empty(0, device=self.device, dtype=self.dtype)
        self.slots = self.capacity = 0
        self.version += 1

    def ensure(self, length: int, slots: int = 1) -> None:
        if length > self.capacity or slots > self.slots:
            self.reserve(slots, length)

    def move(self, src: int, dst: int) -> None:
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def prefill(self, slot: int, start: int, length: int) -> None:
        """Next forward writes `length` tokens of `slot` from position `start`."""
        self.ensure(start + length, slot + 1)
        self._mode = ("prefill", slot, start, length)

    def prefill_packed(self, slots: Sequence[int], lengths: Sequence[int], starts: Sequence[int] | None = None) -> None:
        """Next forward is several prompts packed in one row: prompt j (lengths[j] new tokens) goes
        to slots[j] from position starts[j] (tokens before it are already in that slot, e.g. from
        the prefix cache); attention is causal within each prompt only."""
        n = len(lengths)
        starts = list(starts) if starts is not None else [0] * n
        ends = [a + b for a, b in zip(starts, lengths, strict=True)]
        self.ensure(max(ends), max(slots) + 1)
        dev = self.device
        seg = torch.repeat_interleave(torch.arange(n, device=dev), torch.tensor(lengths, device=dev))
        offsets = torch.tensor([0, *itertools.accumulate(lengths)][:-1], device=dev)
        pos = torch.arange(int(sum(lengths)), device=dev) - offsets[seg] + torch.tensor(starts, device=dev)[seg]
        slot_t = torch.tensor(list(slots), device=dev)
        heads = torch.arange(self.heads, device=dev)[:, None]
        flat = ((slot_t[seg][None, :] * self.heads + heads) * self.capacity + pos[None, :]).reshape(-1)
        gather = None
        if not any(starts):
            mask = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
        else:  # keys: each prompt's whole slot (cached prefix + new tokens), read back after the write
            kseg = torch.repeat_interleave(torch.arange(n, device=dev), torch.tensor(ends, device=dev))
            koffsets = torch.tensor([0, *itertools.accumulate(ends)][:-1], device=dev)
            kpos = torch.arange(int(sum(ends)), device=dev) - koffsets[kseg]
            gather = ((slot_t[kseg][None, :] * self.heads + heads) * self.capacity + kpos[None, :]).reshape(-1)
            mask = (seg[:, None] == kseg[None, :]) & (kpos[None, :] <= pos[:, None])
        self._mode = ("packed", flat, mask, gather)
        self.packed_positions = pos

    def load_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy cached prefix keys/values [layers, kv_heads, tokens, head_dim] into a slot."""
        self.k[:, slot, :, : keys.shape[2]] = keys
        self.v[:, slot, :, : values.shape[2]] = values

    def decode(self, positions: torch.Tensor, span: int | None = None) -> None:
        """Next forward writes one token for each of slots 0..n-1 at `positions` [n]."""
        n = positions.shape[0]
        span = int(positions.max()) + 1 if span is None else span
        self.ensure(span, n)
        mask = torch.arange(span, device=self.device)[None, :] <= positions[:, None]
        # row-major offsets of (slot, head, position) in a [slots * heads * capacity, head_dim] view
        heads = torch.arange(self.heads, device=self.device)
        flat = (
            (torch.arange(n, device=self.device)[:, None] * self.heads + heads) * self.capacity + positions[:, None]
        ).reshape(-1)
        self._mode = ("decode", n, flat, span, mask[:, None, None, :])

    def update(self, layer, k, v):
        if self._mode[0] == "packed":
            _, flat, mask, gather = self._mode
            S, H, D = self.slots, self.heads, self.head_dim
            total = k.shape[2]
            k_flat = self.k[layer].view(S * H * self.capacity, D)
            v_flat = self.v[layer].view(S * H * self.capacity, D)
            k_flat.index_copy_(0, flat, k[0].reshape(H * total, D))
            v_flat.index_copy_(0, flat, v[0].reshape(H * total, D))
            if gather is None:
                return k, v, mask, False
            keys = k_flat.index_select(0, gather).view(1, H, -1, D)
            return keys, v_flat.index_select(0, gather).view(1, H, -1, D), mask, False
        if self._mode[0] == "prefill":
            _, slot, start, length = self._mode
            self.k[layer, slot, :, start : start + length] = k[0]
            self.v[layer, slot, :, start : start + length] = v[0]
            if start == 0:
                return k, v, None, length > 1
            keys = self.k[layer, slot : slot + 1, :, : start + length]
            values = self.v[layer, slot : slot + 1, :, : start + length]
            return keys, values, causal_mask(length, start + length, k.device), False
        _, n, flat, span, mask = self._mode
        S, H, D = self.slots, self.heads, self.head_dim
        self.k[layer].view(S * H * self.capacity, D).index_copy_(0, flat, k.reshape(n * H, D))
        self.v[layer].view(S * H * self.capacity, D).index_copy_(0, flat, v.reshape(n * H, D))
        return self.k[layer, :n, :, :span], self.v[layer, :n, :, :span], mask, False


class PrefixCache:
    """Keys/values of prompt blocks seen before, so a new prompt that starts the same way (a system
    prompt, the earlier turns of a conversation) skips recomputing them.

    A block is `block` tokens; an entry is keyed by its parent entry and its exact tokens, so a
    hit is an exact match of the whole prefix. Least recently used entries go first when the
    memory budget is exceeded.
    """

    def __init__(self, block: int, max_bytes: int):
        self.block, self.max_bytes = block, max_bytes
        self.entries: collections.OrderedDict[tuple, tuple[int, torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self.bytes = 0
        self._ids = itertools.count(1)

    def lookup(self, tokens: Sequence[int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Cached blocks at the start of `tokens`, leaving at least one token to compute."""
        found: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        parent, b = 0, self.block
        for i in range((len(tokens) - 1) // b):
            key = (parent, tuple(tokens[i * b : (i + 1) * b]))
            entry = self.entries.get(key)
            if entry is None:
                break
            self.entries.move_to_end(key)
            found.append(entry)
            parent = entry[0]
        return found

    def insert(self, tokens: Sequence[int], k_slot: torch.Tensor, v_slot: torch.Tensor) -> None:
        """Remember the full blocks of `tokens` whose keys/values are in k_slot/v_slot [L, H, T, D]."""
        parent, b = 0, self.block
        for i in range(len(tokens) // b):
            key = (parent, tuple(tokens[i * b : (i + 1) * b]))
            entry = self.entries.get(key)
            if entry is None:
                k = k_slot[:, :, i * b : (i + 1) * b].clone()
                v = v_slot[:, :, i * b : (i + 1) * b].clone()
                size = 2 * k.numel() * k.element_size()
                if size > self.max_bytes:
                    return
                entry = self.entries[key] = (next(self._ids), k, v)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, old_k, _) = self.entries.popitem(last=False)
                    self.bytes -= 2 * old_k.numel() * old_k.element_size()
            else:
                self.entries.move_to_end(key)
            parent = entry[0]

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


# ---------------------------------------------------------------------------------------------
# model runners: our GPT (batched slots) or a transformers model (fallback, one row at a time)


class GPTRunner:
    """Runs our GPT with a slot KV cache: batched decode over all running requests."""

    def __init__(
        self, model, max_slots: int, max_len: int, budget_bytes: int | None = None, cuda_graphs: bool | None = None
    ):
        cfg = model.config
        param = next(model.parameters())
        self.model = model
        self.device = param.device
        self.vocab_size = cfg.vocab_size
        self.cache = SlotKVCache(cfg.n_layer, cfg.kv_heads, cfg.dim_head, max_slots, max_len, param.device, param.dtype)
        self.budget_bytes = budget_bytes
        # CUDA graphs replay a whole decode step as one launch (per batch-size bucket); on by default on CUDA
        self.cuda_graphs = param.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[tuple[int, int], tuple] = {}
        self._graph_version = -1

    def fits(self, slots: int, length: int) -> bool:
        """Whether a KV cache for `slots` sequences of `length` tokens stays within the budget."""
        return self.budget_bytes is None or self.cache.bytes_for(slots, length, exact=True) <= self.budget_bytes

    def reserve(self, slots: int, length: int) -> None:
        self.cache.reserve(slots, length, self.budget_bytes)

    def idle(self) -> None:
        self.cache.release()
        self._graphs.clear()

    @torch.inference_mode()
    def prefill(self, slot: int, ids: Sequence[int], start: int = 0) -> torch.Tensor:
        x = torch.tensor([list(ids)], device=self.device)
        positions = torch.arange(start, start + len(ids), device=self.device)[None]
        self.cache.prefill(slot, start, len(ids))
        return self.model(x, positions=positions, cache=self.cache, last_only=True)[0, -1]

    @torch.inference_mode()
    def prefill_many(
        self, slots: Sequence[int], prompts: Sequence[Sequence[int]], starts: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Prompts (from `starts`, default 0) in one packed forward; the logits after each [n, V]."""
        lengths = [len(p) for p in prompts]
        x = torch.tensor([[t for p in prompts for t in p]], device=self.device)
        self.cache.prefill_packed(slots, lengths, starts)
        ends = torch.tensor(list(itertools.accumulate(lengths)), device=self.device) - 1
        positions = self.cache.packed_positions[None]
        return self.model(x, positions=positions, cache=self.cache, logit_index=ends)[0]

    @torch.inference_mode()
    def decode(self, tokens: Sequence[int], positions: Sequence[int], graph_ok: bool = True) -> torch.Tensor:
        """Logits [n, V] after one token for each of slots 0..n-1.

        graph_ok=False when a slot beyond n holds live data (a prompt being prefilled in chunks):
        a graph's padding rows write there.
        """
        n = len(tokens)
        bucket = 1 << (n - 1).bit_length()
        if self.cuda_graphs and graph_ok and bucket <= self.cache.slots:
            return self._graph_decode(tokens, positions, bucket)
        x = torch.tensor(tokens, device=self.device)[:, None]
        pos = torch.tensor(positions, device=self.device)
        self.cache.decode(pos, max(positions) + 1)  # span from the host list: no device sync
        return self.model(x, positions=pos[:, None], cache=self.cache)[:, -1]

    def _graph_decode(self, tokens, positions, bucket: int) -> torch.Tensor:
        if self._graph_version != self.cache.version:  # the cache was reallocated: graphs point at old memory
            self._graphs.clear()
            self._graph_version = self.cache.version
        entry = self._graphs.get((bucket, self.cache.capacity))
        if entry is None:
            try:
                entry = self._graphs[(bucket, self.cache.capacity)] = self._capture(bucket)
            except RuntimeError as exc:  # capture unsupported here: run eagerly from now on
                log.warning("CUDA graph capture failed (%s); decoding without graphs", exc)
                self.cuda_graphs = False
                torch.cuda.synchronize(self.device)
                return self.decode(tokens, positions, graph_ok=False)
        graph, tok_buf, pos_buf, out = entry
        n = len(tokens)
        host = torch.zeros(2, bucket, dtype=torch.long)  # padding rows: token 0 at position 0 of free slots
        host[0, :n] = torch.tensor(tokens)
        host[1, :n] = torch.tensor(positions)
        tok_buf.copy_(host[0])
        pos_buf.copy_(host[1])
        graph.replay()
        return out[:n]

    def _capture(self, bucket: int) -> tuple:
        tok_buf = torch.zeros(bucket, dtype=torch.long, device=self.device)
        pos_buf = torch.zeros(bucket, dtype=torch.long, device=self.device)

        def step():
            self.cache.decode(pos_buf, self.cache.capacity)  # attend over the whole capacity, masked
            return self.model(tok_buf[:, None], positions=pos_buf[:, None], cache=self.cache)[:, -1]

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
        return graph, tok_buf, pos_buf, out

    def move(self, src: int, dst: int) -> None:
        self.cache.move(src, dst)

    def free(self, slot: int) -> None:
        pass


class TransformersRunner:
    """Fallback for architectures our code does not implement: a transformers model, one
    sequence per forward (each slot keeps its own past_key_values)."""

    def __init__(self, model, max_slots: int, max_len: int, budget_bytes: int | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self.past: list[Any] = [None] * max_slots

    @torch.inference_mode()
    def prefill(self, slot: int, ids: Sequence[int], start: int = 0) -> torch.Tensor:
        x = torch.tensor([list(ids)], device=self.device)
        out = self.model(input_ids=x, past_key_values=self.past[slot] if start else None, use_cache=True)
        self.past[slot] = out.past_key_values
        return out.logits[0, -1]

    def prefill_many(
        self, slots: Sequence[int], prompts: Sequence[Sequence[int]], starts: Sequence[int] | None = None
    ) -> torch.Tensor:
        starts = starts or [0] * len(prompts)
        return torch.stack([self.prefill(*a) for a in zip(slots, prompts, starts, strict=True)])

    @torch.inference_mode()
    def decode(self, tokens: Sequence[int], positions: Sequence[int], graph_ok: bool = True) -> torch.Tensor:
        rows = []
        for slot, tok in enumerate(tokens):
            x = torch.tensor([[tok]], device=self.device)
            out = self.model(input_ids=x, past_key_values=self.past[slot], use_cache=True)
            self.past[slot] = out.past_key_values
            rows.append(out.logits[0, -1])
        return torch.stack(rows)

    def move(self, src: int, dst: int) -> None:
        self.past[dst] = self.past[src]
        self.past[src] = None

    def free(self, slot: int) -> None:
        self.past[slot] = None

    def fits(self, slots: int, length: int) -> bool:
        return True

    def reserve(self, slots: int, length: int) -> None:
        pass

    def idle(self) -> None:
        self.past = [None] * len(self.past)


# ---------------------------------------------------------------------------------------------
# requests


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    budget: int  # max completion tokens
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    submitted: float = field(default_factory=time.monotonic)
    generated: list[int] = field(default_factory=list)
    prefilled: int = 0  # prompt tokens already in the cache
    text: str = ""
    emitted: int = 0  # chars of text already streamed
    decoder: StreamDecoder | None = None
    generator: torch.Generator | None = None
    slot: int = -1
    hit: list = field(default_factory=list)  # prefix cache blocks found at admission
    cancelled: bool = False  # set by cancel(); the worker frees the slot
    done: bool = False  # the worker has finished with it
    closed: bool = False  # a Finished was delivered (loop thread only)
    first_token_at: float | None = None
    failure: str | None = None  # why its token selection failed (it then finishes with "error")
    json: JSONPrefix | None = None  # the output so far, under a response_format constraint
    forced: list[int] = field(default_factory=list)  # the closing tokens when the constraint force-closes
    step_logprob: TokenLogprob | None = None  # the logprob entry of the token being accepted
    logprobs: collections.deque = field(default_factory=collections.deque)  # (text offset, entry) not yet sent

    @property
    def need(self) -> int:
        """The most tokens this request can hold in the KV cache."""
        return len(self.prompt) + self.budget

    @property
    def position(self) -> int:
        """Tokens in the cache: the next token's position."""
        return len(self.prompt) + len(self.generated) - 1


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
    kv_cache_mb: float = 0.0
    prefix_cache_mb: float = 0.0


# ---------------------------------------------------------------------------------------------
# the engine


class ModelEngine:
    """EngineClient backed by a real model with continuous batching."""

    def __init__(
        self,
        source: str,
        *,
        dtype: str = "float32",
        max_context_tokens: int | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        max_batch_size: int = 32,
        max_queue: int = 256,
        prefill_chunk: int = 512,
        threads: int | None = None,
        kv_cache_mb: float | None = None,
        prefix_cache_mb: float | None = None,
        prefix_block: int = 16,
        cuda_graphs: bool | None = None,
        revision: str | None = None,
        loaded: Loaded | None = None,
    ):
        self.source = source
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        threads = threads or int(os.environ.get("GPT_MODEL_THREADS", "0") or 0)
        if threads:  # CPU threads for torch; on a busy node fewer threads beat spinning ones
            torch.set_num_threads(threads)
        self._loaded = loaded or load_source(
            source, dtype=dtype, device=self.device, cache_dir=cache_dir, revision=revision
        )
        self.tokenizer = self._loaded.tokenizer
        self.model_id = self._loaded.model_id
        window = self._loaded.context_window
        window = min(window, max_context_tokens) if max_context_tokens else window
        if kv_cache_mb is None:
            kv_cache_mb = float(os.environ.get("GPT_MODEL_KV_CACHE_MB", "0") or 0) or (
                8192 if str(self.device).startswith("cuda") else 1024
            )
        self.kv_cache_bytes = int(kv_cache_mb * 2**20)
        model = self._loaded.model
        if self._loaded.config is not None:
            self._runner: GPTRunner | TransformersRunner = GPTRunner(
                model, max_batch_size, window, self.kv_cache_bytes, cuda_graphs
            )
            # one request alone must fit in the KV cache budget
            fits_alone = (self.kv_cache_bytes // self._runner.cache.token_bytes) // 256 * 256
            if fits_alone < window:
                window = max(fits_alone, 256)
                self._runner.cache.max_len = window
        else:
            self._runner = TransformersRunner(model, max_batch_size, window)
        self.context_window = window
        # prompts that start like earlier ones reuse their keys/values (default: a quarter of the KV budget)
        prefix_bytes = int((kv_cache_mb / 4 if prefix_cache_mb is None else prefix_cache_mb) * 2**20)
        self._prefix = (
            PrefixCache(prefix_block, prefix_bytes)
            if prefix_bytes > 0 and prefix_block > 0 and isinstance(self._runner, GPTRunner)
            else None
        )
        self.stats = EngineStats()
        self._requests: dict[str, _Request] = {}
        self._waiting: collections.deque[_Request] = collections.deque()
        self._running: list[_Request] = []  # fully prefilled; slot == index
        self._prefilling: _Request | None = None  # at most one, at a slot >= len(_running)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._rate_window: collections.deque[tuple[float, int]] = collections.deque()
        self._seen: torch.Tensor | None = None  # [slots, vocab] for repetition penalty
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

    def _check_params(self, params: SamplingParams) -> JSONPrefix | None:
        """Refuse what cannot be honoured (InvalidParameter); the start state of a JSON constraint."""
        vocab = self._runner.vocab_size
        outside = [i for i, _ in params.logit_bias if not 0 <= i < vocab]
        if outside:
            raise InvalidParameter("logit_bias", f"token id {outside[0]} is outside the vocabulary (0..{vocab - 1})")
        if params.logprobs is not None and not 0 <= params.logprobs <= 20:
            raise InvalidParameter("top_logprobs", "top_logprobs must be between 0 and 20")
        fmt = params.response_format
        if fmt is None:
            return None
        if fmt.type == "json_object":
            return JSONPrefix.start()
        try:
            return JSONPrefix.start(compile_schema(json.loads(fmt.schema or "null")))
        except (UnsupportedSchema, ValueError) as exc:
            raise InvalidParameter("response_format", f"json_schema: {exc}") from exc

    def _table(self) -> constrained.TokenTable:
        if self._tokens is None:
            self._tokens = constrained.TokenTable(self.tokenizer, self._runner.vocab_size)
        return self._tokens

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._seen = torch.zeros(
            self.max_batch_size, self._runner.vocab_size, dtype=torch.bool, device=self._runner.device
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
            if not (req.done or req.cancelled):
                self._finish(req, "cancelled")
        self._waiting.clear()
        self._running.clear()
        self._prefilling = None

    async def health(self) -> EngineHealth:
        ready = self._thread is not None and self._thread.is_alive()
        with self._cond:
            return EngineHealth(
                ready=ready,
                model_id=self.model_id,
                detail=self.error or "",
                queue_depth=len(self._waiting),
                running=len(self._running) + (self._prefilling is not None),
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
        start = self._check_params(params)
        budget = max(0, min(params.max_tokens, self.context_window - len(prompt)))
        req = _Request(request.request_id, prompt, params, budget, asyncio.get_running_loop(), asyncio.Queue())
        req.json = start
        if not params.plain:
            await asyncio.to_thread(self._table)  # once per engine: every token's text and bytes
        if params.temperature > 0:
            req.generator = make_generator(params.seed, self._runner.device)
        req.decoder = StreamDecoder(self.tokenizer)
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                self.stats.requests_rejected += 1
                raise EngineOverloaded(f"{len(self._waiting)} requests are waiting; try again later")
            self._requests[req.request_id] = req
            self._waiting.append(req)
            self.stats.requests_total += 1
            self._cond.notify()
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

    def cancel_nowait(self, req: _Request, reason: str) -> None:
        """Finish a request from the loop thread; the worker frees its slot before the next step."""
        with self._cond:
            req.cancelled = True
            with contextlib.suppress(ValueError):
                self._waiting.remove(req)
            if reason == "cancelled":
                self.stats.requests_cancelled += 1
            self._cond.notify()
        self._deliver(req, Finished(reason, Usage(len(req.prompt), len(req.generated))))  # type: ignore[arg-type]

    def snapshot(self) -> EngineStats:
        """Counters plus queue depth, running requests and recent tokens/s."""
        with self._cond:
            s = EngineStats(**vars(self.stats))
            s.queue_depth, s.running = len(self._waiting), len(self._running)
            cache = getattr(self._runner, "cache", None)
            if cache is not None:
                s.kv_cache_mb = cache.slots * cache.capacity * cache.token_bytes / 2**20
            if self._prefix is not None:
                s.prefix_cache_mb = self._prefix.bytes / 2**20
        now = time.monotonic()
        window = [(t, n) for t, n in list(self._rate_window) if now - t <= 5.0]
        if window:
            span = max(now - window[0][0], 1e-3)
            s.tokens_per_s = sum(n for _, n in window) / span
        return s

    # -- delivery (loop thread) ----------------------------------------------------------------

    def _deliver(self, req: _Request, event: StreamEvent) -> None:
        if req.closed:
            return
        if isinstance(event, Finished):
            req.closed = True
        req.queue.put_nowait(event)

    def _emit(self, req: _Request, event: StreamEvent) -> None:
        try:
            req.loop.call_soon_threadsafe(self._deliver, req, event)
        except RuntimeError:  # the loop is closed: nobody is listening
            req.cancelled = True

    def _finish(self, req: _Request, reason: str, error: str | None = None) -> None:
        req.done = True
        self.stats.requests_finished += 1
        self._emit(req, Finished(reason, Usage(len(req.prompt), len(req.generated)), error))  # type: ignore[arg-type]

    # -- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._stop and not self._waiting and not self._running and not self._prefilling:
                    self._runner.idle()  # nothing to do: give the KV cache memory back
                    self._cond.wait()
                if self._stop:
                    return
            try:
                self._step()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                failed = list(self._running) + ([self._prefilling] if self._prefilling else [])
                for req in failed:
                    self._finish(req, "error", self.error)
                self._running.clear()
                self._prefilling = None

    def _step(self) -> None:
        runner = self._runner
        assert runner is not None and self._seen is not None
        self._drop_cancelled()
        # admit and prefill (chunked: at most `prefill_chunk` prompt tokens per iteration, so
        # running streams keep flowing while a long prompt comes in)
        budget = self.prefill_chunk
        req = self._prefilling
        if req is not None:  # a long prompt, one chunk per iteration
            budget -= self._prefill_chunk(req, budget)
        if self._prefilling is None and budget > 0:
            # whole prompts that fit the budget are packed into one forward
            pack = self._admit_pack(budget)
            for r in pack:  # cached prefixes go straight into their slots
                if r.hit:
                    runner.cache.load_prefix(
                        r.slot, torch.cat([e[1] for e in r.hit], dim=2), torch.cat([e[2] for e in r.hit], dim=2)
                    )
                    r.hit = []
            if len(pack) == 1 and len(pack[0].prompt) - pack[0].prefilled > budget:
                self._prefilling = pack[0]  # too long for this iteration: chunked from now on
                self._prefill_chunk(pack[0], budget)
            elif pack:
                logits = runner.prefill_many(
                    [r.slot for r in pack], [r.prompt[r.prefilled :] for r in pack], [r.prefilled for r in pack]
                )
                self.stats.prompt_tokens_total += sum(len(r.prompt) - r.prefilled for r in pack)
                for r in pack:
                    r.prefilled = len(r.prompt)
                with self._cond:
                    self._running.extend(pack)
                for r in pack:
                    self._mark_prompt(r)
                    self._remember_prompt(r)
                sampled = self._pick(pack, logits, self._seen[pack[0].slot : pack[0].slot + len(pack)])
                for r, token in zip(pack, sampled, strict=True):
                    self._accept(r, r.slot, token)
        self._drop_finished()
        # one decode step for every running request together
        ready = list(self._running)
        if not ready:
            return
        n = len(ready)
        tokens = [r.generated[-1] for r in ready]
        positions = [r.position for r in ready]
        logits = runner.decode(tokens, positions, self._prefilling is None)
        self.stats.decode_steps += 1
        sampled = self._pick(ready, logits, self._seen[:n])
        for slot, (req, token) in enumerate(zip(ready, sampled, strict=True)):
            self._accept(req, slot, token)
        self._rate_window.append((time.monotonic(), n))
        while len(self._rate_window) > 256:
            self._rate_window.popleft()
        self._drop_finished()

    def _admit_pack(self, budget: int) -> list[_Request]:
        """Waiting requests for free slots, first come first served: whole prompts within `budget`
        tokens, or one longer prompt alone (which is then prefilled in chunks). A request waits
        while the KV cache for it and the running ones (each up to prompt + max_tokens) would
        exceed the memory budget."""
        pack: list[_Request] = []
        used = 0
        length = max((r.need for r in self._running), default=0)
        with self._cond:
            while self._waiting and len(self._running) + len(pack) < self.max_batch_size:
                req = self._waiting[0]
                if req.cancelled:
                    self._waiting.popleft()
                    continue
                slots, longest = len(self._running) + len(pack) + 1, max(length, req.need)
                if (self._running or pack) and not self._runner.fits(slots, longest):
                    break
                if self._prefix is not None and not req.prefilled:
                    req.hit = self._prefix.lookup(req.prompt)
                    req.prefilled = len(req.hit) * self._prefix.block
                    self.stats.prefix_cached_tokens_total += req.prefilled
                todo = len(req.prompt) - req.prefilled
                if pack and used + todo > budget:
                    break  # stays first in line; its prefix hit is kept for the next iteration
                self._waiting.popleft()
                req.slot = len(self._running) + len(pack)
                pack.append(req)
                used += todo
                length = longest
                if used >= budget:
                    break
        if pack:
            self._runner.reserve(len(self._running) + len(pack), length)
        return pack

    def _prefill_chunk(self, req: _Request, budget: int) -> int:
        """Prefill the next chunk of a long prompt; when it is all in, the request starts decoding."""
        runner = self._runner
        chunk = req.prompt[req.prefilled : req.prefilled + budget]
        logits = runner.prefill(req.slot, chunk, req.prefilled)
        req.prefilled += len(chunk)
        self.stats.prompt_tokens_total += len(chunk)
        if req.prefilled < len(req.prompt):
            return len(chunk)
        with self._cond:
            self._prefilling = None
            slot = len(self._running)
            if req.slot != slot:
                runner.move(req.slot, slot)
                req.slot = slot
            self._running.append(req)
        self._mark_prompt(req)
        self._remember_prompt(req)
        token = self._pick([req], logits[None], self._seen[slot : slot + 1])[0]
        self._accept(req, slot, token)
        return len(chunk)

    def _remember_prompt(self, req: _Request) -> None:
        if self._prefix is not None:
            cache = self._runner.cache
            self._prefix.insert(req.prompt, cache.k[:, req.slot], cache.v[:, req.slot])

    def _mark_prompt(self, req: _Request) -> None:
        if req.params.repetition_penalty != 1.0:  # only then are the seen tokens tracked
            self._seen[req.slot].zero_()
            self._seen[req.slot, torch.tensor(req.prompt, device=self._seen.device)] = True

    def _pick(self, reqs: Sequence[_Request], logits: torch.Tensor, seen: torch.Tensor) -> list[int]:
        """The next token of each request (rows of `logits` [n, V]); -1: append the forced closing,
        -2: this request's selection failed.

        Plain requests take the batched path. Others get OpenAI's penalties and logit_bias on their
        row, a JSON constraint picks their token, and their logprob entry is kept for _accept.
        """
        params = [r.params for r in reqs]
        generators = [r.generator for r in reqs]
        if all(p.plain for p in params):
            return sample_rows(logits, params, generators, seen).tolist()
        logits = logits.float().clone()
        if any(p.repetition_penalty != 1.0 for p in params):
            penalty = torch.tensor([p.repetition_penalty for p in params], device=logits.device)
            logits = apply_repetition_penalty(logits, seen, penalty)
        special = [i for i, p in enumerate(params) if not p.plain]
        for i in special:
            p = params[i]
            row = apply_openai_penalties(logits[i], reqs[i].generated, p.presence_penalty, p.frequency_penalty)
            logits[i] = apply_logit_bias(row, p.logit_bias)
        # rows under a constraint are picked below, without drawing from their generator here
        free = [dataclasses.replace(p, temperature=0) if reqs[i].json is not None else p for i, p in enumerate(params)]
        tokens = sample_rows(logits, free, generators).tolist()
        table = self._table()
        for i in special:
            try:
                tokens[i] = self._pick_special(reqs[i], logits[i], tokens[i], table)
            except Exception as exc:  # this request fails alone; the batch goes on
                log.exception("token selection failed for %s", reqs[i].request_id)
                reqs[i].failure = f"{type(exc).__name__}: {exc}"
                tokens[i] = -2
        return tokens

    def _pick_special(self, req: _Request, row: torch.Tensor, token: int, table: constrained.TokenTable) -> int:
        """The constrained token (or -1: force-close) and the logprob entry of a non-plain request."""
        if req.json is not None:
            remaining = req.budget - len(req.generated) - 1
            choice = constrained.choose(row, req.json, req.params, req.generator, remaining, table)
            if choice is None:  # nothing fits: close the document now
                req.forced = table.encode(req.json.closing())[: max(1, remaining + 1)]
                token = -1
            else:
                token, req.json = choice
        if req.params.logprobs is not None:
            req.step_logprob = constrained.token_logprob(
                torch.log_softmax(row, dim=-1), token if token >= 0 else req.forced[0], req.params.logprobs, table
            )
        return token

    def _accept(self, req: _Request, slot: int, token: int) -> None:
        if req.cancelled:
            return
        if token == -2:
            self._finish(req, "error", req.failure)
            return
        if token < 0:
            self._accept_forced(req, slot)
            return
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
        req.generated.append(token)
        self.stats.generated_tokens_total += 1
        if req.params.repetition_penalty != 1.0:
            self._seen[slot, token] = True
        if token in self.tokenizer.eos_token_ids and req.json is None:
            req.generated.pop()  # the stop token is not part of the reply
            self._flush(req)
            self._finish(req, "stop")
            return
        self._append_text(req, token)
        if self._check_stop(req):
            self._finish(req, "stop")
            return
        if req.json is not None and req.json.done:  # the document is complete: nothing may follow
            self._flush(req)
            self._finish(req, "stop")
            return
        if len(req.generated) >= req.budget or req.position >= self.context_window:
            self._flush(req)
            self._finish(req, "length")

    def _append_text(self, req: _Request, token: int) -> None:
        if req.step_logprob is not None:
            req.logprobs.append((len(req.text), req.step_logprob))
            req.step_logprob = None
        req.text += req.decoder.push(token)

    def _accept_forced(self, req: _Request, slot: int) -> None:
        """Append the constraint's closing tokens and finish (the model is not run for them)."""
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
        table = self._table()
        for i, token in enumerate(req.forced):
            if i and req.params.logprobs is not None:
                req.step_logprob = constrained.forced_logprob(token, table)
            req.generated.append(token)
            self.stats.generated_tokens_total += 1
            self._append_text(req, token)
        if self._check_stop(req):
            self._finish(req, "stop")
            return
        self._flush(req)
        self._finish(req, "length" if len(req.generated) >= req.budget else "stop")

    def _take_logprobs(self, req: _Request, upto: int) -> tuple[TokenLogprob, ...]:
        """The entries of tokens whose text starts before character `upto` and was not sent yet."""
        taken = []
        while req.logprobs and req.logprobs[0][0] < upto:
            taken.append(req.logprobs.popleft()[1])
        return tuple(taken)

    def _check_stop(self, req: _Request) -> bool:
        """Stream what is safe to stream; True when a stop sequence was found (text cut before it)."""
        stops = [s for s in req.params.stop if s]
        text = req.text
        if stops:
            longest = max(len(s) for s in stops)
            start = max(0, req.emitted - longest)
            hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
            if hits:
                cut = min(hits)
                if cut > req.emitted:
                    self._emit(req, TextDelta(text[req.emitted : cut], self._take_logprobs(req, cut)))
                req.emitted = len(text)
                return True
            # hold back a tail that could still become a stop sequence
            hold = 0
            for s in stops:
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        hold = max(hold, k)
                        break
            safe = len(text) - hold
        else:
            safe = len(text)
        if safe > req.emitted:
            self._emit(req, TextDelta(text[req.emitted : safe], self._take_logprobs(req, safe)))
            req.emitted = safe
        return False

    def _flush(self, req: _Request) -> None:
        req.text += req.decoder.flush()
        if len(req.text) > req.emitted and not any(s and s in req.text for s in req.params.stop):
            self._emit(req, TextDelta(req.text[req.emitted :], self._take_logprobs(req, len(req.text))))
            req.emitted = len(req.text)

    def _drop_cancelled(self) -> None:
        req = self._prefilling
        if req is not None and req.cancelled:
            req.done = True
            self._prefilling = None
            self._runner.free(req.slot)
        for req in [r for r in self._running if r.cancelled]:
            req.done = True
            self._remove(req)

    def _drop_finished(self) -> None:
        for req in [r for r in self._running if r.done or r.cancelled]:
            self._remove(req)

    def _remove(self, req: _Request) -> None:
        """Free a slot, keeping running slots compact: the last one moves into the hole.

        A request being prefilled sits at a slot >= len(running) and is never moved here.
        """
        runner = self._runner
        with self._cond:
            slot = self._running.index(req)
            last = len(self._running) - 1
            if slot != last:
                moved = self._running[last]
                runner.move(last, slot)
                if moved.params.repetition_penalty != 1.0:
                    self._seen[slot] = self._seen[last]
                self._running[slot] = moved
                moved.slot = slot
            self._running.pop()
            runner.free(last)


def open_model_engine(source: str, **options: Any) -> ModelEngine:
    """An unstarted engine for a real model source; unknown options are ignored.

    Options: dtype ("float32" | "bfloat16"), max_context_tokens, cache_dir, device,
    max_batch_size, max_queue, prefill_chunk, threads (also $GPT_MODEL_THREADS),
    kv_cache_mb (KV cache memory budget; also $GPT_MODEL_KV_CACHE_MB; default 1024 on CPU, 8192 on CUDA),
    prefix_cache_mb (reused prompt prefixes; default kv_cache_mb / 4; 0 disables), prefix_block (16),
    cuda_graphs (default: on for CUDA), revision (for hf: sources).
    """
    known = {
        "dtype",
        "max_context_tokens",
        "cache_dir",
        "device",
        "max_batch_size",
        "max_queue",
        "prefill_chunk",
        "threads",
        "kv_cache_mb",
        "prefix_cache_mb",
        "prefix_block",
        "cuda_graphs",
        "revision",
    }
    kwargs = {k: v for k, v in options.items() if k in known and v is not None}
    return ModelEngine(source, **kwargs)
