"""Model runners: what the engine asks of a model (the ModelRunner Protocol) and the two that exist: our GPT
with a slot KV cache (batched decode, prefix cache, CUDA graphs) and a transformers model (one row at a time)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from gpt_model.checkpoint import Loaded
from gpt_model.engine_config import EngineConfig
from gpt_model.kv_cache import SlotKVCache

log = logging.getLogger("gpt_model.engine")


class ModelRunner(Protocol):
    """Runs a model over slots 0..max_slots-1 of its own KV cache; the engine never touches the cache itself.

    Running sequences occupy slots 0..n-1; a prompt being prefilled in chunks sits at a slot beyond them.
    """

    device: torch.device
    vocab_size: int
    supports_prefix_cache: bool  # whether load_prefix/prefix_of work (a prefix cache can be used)

    @property
    def max_len(self) -> int:
        """The longest sequence a slot holds: the context window, capped so one sequence alone fits the budget."""
        ...

    def prefill(self, slot: int, ids: Sequence[int], start: int = 0) -> torch.Tensor:
        """Write `ids` into `slot` from position `start`; the logits after the last one [V]."""
        ...

    def prefill_many(
        self, slots: Sequence[int], prompts: Sequence[Sequence[int]], starts: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Several prompts (each into its slot from its start) at once; the logits after each [n, V]."""
        ...

    def decode(self, tokens: Sequence[int], positions: Sequence[int], graph_ok: bool = True) -> torch.Tensor:
        """One token for each of slots 0..n-1 at `positions`; the logits after each [n, V]."""
        ...

    def move(self, src: int, dst: int) -> None:
        """Move the sequence in slot `src` to slot `dst`."""
        ...

    def free(self, slot: int) -> None:
        """The sequence in `slot` is gone."""
        ...

    def fits(self, slots: int, length: int) -> bool:
        """Whether `slots` sequences of up to `length` tokens fit the memory budget."""
        ...

    def reserve(self, slots: int, length: int) -> None:
        """Make room for `slots` sequences of up to `length` tokens (running ones are kept)."""
        ...

    def idle(self) -> None:
        """Nothing runs: give the cache memory back."""
        ...

    def load_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put cached prefix keys/values [layers, kv_heads, tokens, head_dim] at the start of `slot`."""
        ...

    def prefix_of(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys/values of the first `length` tokens of `slot` [layers, kv_heads, length, head_dim] (views)."""
        ...

    def kv_cache_bytes(self) -> int:
        """The bytes the KV cache holds now."""
        ...


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
        if budget_bytes is not None:  # one sequence alone must fit in the KV cache budget
            fits_alone = (budget_bytes // self.cache.token_bytes) // 256 * 256
            if fits_alone < max_len:
                self.cache.max_len = max(fits_alone, 256)
        self.supports_prefix_cache = True
        # CUDA graphs replay a whole decode step as one launch (per batch-size bucket); on by default on CUDA
        self.cuda_graphs = param.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[tuple[int, int], tuple] = {}
        self._graph_version = -1

    @property
    def max_len(self) -> int:
        return self.cache.max_len

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

    def load_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.cache.load_prefix(slot, keys, values)

    def prefix_of(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.k[:, slot, :, :length], self.cache.v[:, slot, :, :length]

    def kv_cache_bytes(self) -> int:
        return self.cache.slots * self.cache.capacity * self.cache.token_bytes


class TransformersRunner:
    """Fallback for architectures our code does not implement: a transformers model, one
    sequence per forward (each slot keeps its own past_key_values)."""

    def __init__(self, model, max_slots: int, max_len: int, budget_bytes: int | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self.max_len = max_len
        self.supports_prefix_cache = False
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

    def load_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        raise NotImplementedError("the transformers runner has no prefix cache")

    def prefix_of(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("the transformers runner has no prefix cache")

    def kv_cache_bytes(self) -> int:
        return 0


def open_runner(loaded: Loaded, config: EngineConfig, max_len: int, budget_bytes: int) -> ModelRunner:
    """Our GPT's runner when the checkpoint is ours, else the transformers fallback, with `config`'s slots and
    weight options, for sequences of up to `max_len` tokens in a KV cache of `budget_bytes`.

    - small_batch_dtype: our GPT keeps a copy of its matmul weights in that dtype for forwards of at most
      small_batch_rows rows (`GPT.use_small_batch_weights`);
    - packed_weights: a oneDNN-packed copy for decode steps on a CPU (`GPT.use_packed_weights`);
    - quantize="int8": int8 matmul weights instead of float32 (`gpt_model.quantize`).
    All three are for float32 weights on a CPU (the copies are skipped elsewhere; int8 is refused); the fallback
    takes none of them."""
    if loaded.config is None:
        if config.quantize:
            raise ValueError("quantize works for our GPT checkpoints only, not a transformers fallback model")
        return TransformersRunner(loaded.model, config.max_batch_size, max_len)
    model = loaded.model
    float32 = next(model.parameters()).dtype == torch.float32
    if config.quantize == "int8":
        from gpt_model.quantize import calibration_prompts, quantize_int8

        int8 = quantize_int8(model, calibration_prompts(loaded.tokenizer))
        log.info("int8 weights: %.0f MB", int8 / 2**20)
    if config.small_batch_dtype is not None and float32:
        small = (config.small_batch_dtype, config.small_batch_rows)
        copies = model.use_small_batch_weights(getattr(torch, small[0]), small[1])
        log.info("small-batch weights: %s for up to %d rows, %.0f MB", *small, copies / 2**20)
    if config.packed_weights and float32:
        copies = model.use_packed_weights(config.max_batch_size)
        log.info("packed weights for decode steps: %.0f MB", copies / 2**20)
    return GPTRunner(model, config.max_batch_size, max_len, budget_bytes, config.cuda_graphs)
