"""KV caches: the slots of running sequences (SlotKVCache) and the blocks of prompts seen before (PrefixCache)."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence

import torch

from gpt_model.gpt import causal_mask


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

    @staticmethod
    def joined(hit: Sequence[tuple[int, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of consecutive blocks `lookup` found, as one prefix each [layers, heads, T, dim]."""
        return torch.cat([e[1] for e in hit], dim=2), torch.cat([e[2] for e in hit], dim=2)
