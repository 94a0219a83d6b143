"""The model, nanoGPT-style, bottom-up: norms, rotary embeddings, attention, MLP, block, GPT.

One module tree serves both families (see config.py). Attention goes through
`scaled_dot_product_attention`; incremental decoding goes through a KV cache object whose
`update(layer, k, v)` stores the new keys/values and returns what to attend over.
"""

from __future__ import annotations

import math
import warnings
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gpt_model.config import GPTConfig

# ---------------------------------------------------------------------------------------------
# norms


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused kernel instead of six
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(config: GPTConfig) -> RMSNorm | nn.LayerNorm:
    if config.family == "gpt2":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=True)
    return RMSNorm(config.n_embd, config.norm_eps)


# ---------------------------------------------------------------------------------------------
# linear layers


class Linear(nn.Linear):
    """nn.Linear that can keep copies of its weight laid out for decode steps.

    - `small`: a float16/bfloat16 copy for forwards of at most `small_rows` rows. A decode step over few sequences
      is a matrix-vector product whose time is the time to read the weights: half the bytes, about twice as fast.
      Over many rows the matmul is compute-bound, and float32 wins where the CPU has no fast half-precision math.
    - `packed`: a oneDNN-layout float32 copy (CPU) for forwards of at most `packed_rows` rows. MKL's sgemm packs
      the weight again on every call, which at 8-32 rows costs about as much as the product; a weight packed once
      does not.
    - `int8`: fbgemm's prepacked int8 weight (CPU) for every forward, which then quantizes its input to 7 bits
      per call: a quarter of the bytes to read, and integer math at every batch size. fbgemm picks one input range
      for the whole forward, so a row's result depends a little on the other rows of a batch. `int8_in` scales the
      input first (SmoothQuant's smoothing, where it could not be folded into the layer before).
    See `GPT.use_small_batch_weights`, `GPT.use_packed_weights` and `gpt_model.quantize`.
    """

    small: torch.Tensor | None = None
    small_bias: torch.Tensor | None = None
    small_rows: int = 0
    packed: torch.Tensor | None = None
    packed_bias: torch.Tensor | None = None
    packed_rows: int = 0
    int8: torch.ScriptObject | None = None  # torch.ops.quantized.linear_prepack's packed params
    int8_in: torch.Tensor | None = None

    def keep_small(self, dtype: torch.dtype | None, rows: int) -> int:
        """Keep a `dtype` copy of the weight (and bias) for forwards of at most `rows` rows (None: drop it);
        the bytes the weight's copy takes."""
        self.small = None if dtype is None else self.weight.detach().to(dtype)
        self.small_bias = None if dtype is None or self.bias is None else self.bias.detach().to(dtype)
        self.small_rows = rows if dtype is not None else 0
        return 0 if self.small is None else self.small.numel() * self.small.element_size()

    def keep_packed(self, rows: int) -> int:
        """Keep a oneDNN-packed copy of a CPU float32 weight (and bias) for forwards of at most `rows` rows (0,
        or another device or dtype: none); the bytes the weight's copy takes."""
        weight = self.weight.detach()
        usable = rows > 0 and weight.device.type == "cpu" and weight.dtype == torch.float32
        self.packed = weight.to_mkldnn() if usable else None
        self.packed_bias = None if self.bias is None or not usable else self.bias.detach().to_mkldnn()
        self.packed_rows = rows if usable else 0
        return weight.numel() * weight.element_size() if usable else 0

    def keep_int8(self, in_scale: torch.Tensor | None = None, runtime_scale: bool = False) -> int:
        """Keep an int8 copy of a CPU float32 weight, one scale per output row, for every forward (the caller drops
        the float32 weight). The copy is of weight * in_scale (per input channel); forwards divide their input by
        in_scale first when `runtime_scale` (else the layer before has been scaled). The bytes the copy takes."""
        weight = self.weight.detach()
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            raise ValueError("int8 weights need float32 weights on a CPU")
        if in_scale is not None:
            weight = weight * in_scale[None, :]
        self.int8_in = (1 / in_scale).contiguous() if in_scale is not None and runtime_scale else None
        scale = (weight.abs().amax(1) / 127).clamp(min=1e-12).double()
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # deprecated for torchao's: still there in the torch we pin (pyproject.toml)
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        self.int8 = torch.ops.quantized.linear_prepack(qweight, None if self.bias is None else self.bias.detach())
        return weight.numel() + 8 * scale.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is not None:
            if self.int8_in is not None:
                x = x * self.int8_in
            # reduce_range: 7-bit inputs; with 8 bits fbgemm's int16 sums of u8 x s8 pairs overflow on AVX2
            return torch.ops.quantized.linear_dynamic(x.contiguous(), self.int8, True)
        rows = x.numel() // x.shape[-1]
        small = self.small
        if small is not None and rows <= self.small_rows:
            return F.linear(x.to(small.dtype), small, self.small_bias).to(x.dtype)
        packed = self.packed
        if packed is not None and rows <= self.packed_rows and x.dtype == torch.float32:
            y = torch._C._nn.mkldnn_linear(x.reshape(rows, x.shape[-1]).to_mkldnn(), packed, self.packed_bias)
            return y.to_dense().view(*x.shape[:-1], packed.shape[0])
        return F.linear(x, self.weight, self.bias)


# ---------------------------------------------------------------------------------------------
# rotary position embeddings (the "rotate half" layout Hugging Face Llama checkpoints use)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, 1, T, head_dim] for integer positions [B, T]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


# ---------------------------------------------------------------------------------------------
# KV caches


class Cache(Protocol):
    """What attention needs from a KV cache."""

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Store new k/v [B, Hkv, T, D]; return (keys, values, attn_mask, is_causal) to attend over."""
        ...


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Bottom-right aligned causal mask [q_len, k_len] (True = may attend)."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    return torch.arange(k_len, device=device)[None, :] <= q_pos


class KVCache:
    """A growing cache for a batch of sequences of equal length (generate(), tests)."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer, k, v):
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
            return k, v, None, k.shape[2] > 1
        self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
        self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        keys, values = self.keys[layer], self.values[layer]
        q_len = k.shape[2]
        mask = None if q_len == 1 else causal_mask(q_len, keys.shape[2], k.device)
        return keys, values, mask, False


# ---------------------------------------------------------------------------------------------
# attention, MLP, block


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.dim_head
        e, q, kv = config.n_embd, config.n_head * config.dim_head, config.kv_heads * config.dim_head
        self.splits = (q, kv, kv)
        self.qkv = Linear(e, q + 2 * kv, bias=config.bias)  # one matmul for q, k and v
        self.o_proj = Linear(q, e, bias=config.bias)

    def forward(self, x, rope=None, cache: Cache | None = None):
        B, T, _ = x.shape
        qkv = self.qkv(x)
        heads = self.n_head + self.n_kv_head
        if rope is not None:  # q and k rotated together: one set of kernels instead of two
            cos, sin = rope
            qk = qkv[..., : heads * self.head_dim].view(B, T, heads, self.head_dim).transpose(1, 2)
            qk = apply_rope(qk, cos, sin)
            q, k = qk.split((self.n_head, self.n_kv_head), dim=1)
            v = qkv[..., heads * self.head_dim :]
        else:
            q, k, v = qkv.split(self.splits, dim=-1)
            q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
            k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.reshape(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        mask, is_causal = None, T > 1
        if cache is not None:
            k, v, mask, is_causal = cache.update(self.layer, k, v)
        rep = self.n_head // self.n_kv_head
        if rep > 1 and T == 1:
            # decode with grouped-query attention: each kv head's query heads become its query rows,
            # so the cache is read as is (no repeated copies of k/v)
            y = F.scaled_dot_product_attention(q.reshape(B, self.n_kv_head, rep, self.head_dim), k, v, attn_mask=mask)
            y = y.reshape(B, self.n_head, 1, self.head_dim)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, enable_gqa=rep > 1
            )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """GELU MLP (gpt2) or SwiGLU (llama)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gated = config.family == "llama"
        e, f = config.n_embd, config.ffn_dim
        if self.gated:
            self.gate_up = Linear(e, 2 * f, bias=False)  # one matmul for gate and up
            self.down = Linear(f, e, bias=False)
        else:
            self.fc = Linear(e, f, bias=config.bias)
            self.proj = Linear(f, e, bias=config.bias)

    def forward(self, x):
        if self.gated:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = Attention(config, layer)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None):
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


# ---------------------------------------------------------------------------------------------
# the model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.family == "gpt2" else None
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight

    def init_weights(self, seed: int | None = None) -> GPT:
        """GPT-2 style initialisation (residual projections scaled by depth)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)
            else:
                residual = name.endswith(("o_proj.weight", "proj.weight", "down.weight"))
                scale = std / math.sqrt(2 * self.config.n_layer) if residual else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        return self

    def use_small_batch_weights(self, dtype: torch.dtype | None, rows: int) -> int:
        """Keep a `dtype` copy of every matmul weight for forwards of at most `rows` rows (None: drop
        the copies). Returns the bytes the copies take."""
        return sum(m.keep_small(dtype, rows) for m in self.modules() if isinstance(m, Linear))

    def use_packed_weights(self, rows: int) -> int:
        """Keep a oneDNN-packed float32 copy of every matmul weight for forwards of at most `rows` rows (0: drop
        them); CPU float32 models only. Returns the bytes the copies take."""
        return sum(m.keep_packed(rows) for m in self.modules() if isinstance(m, Linear))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        cache: Cache | None = None,
        last_only: bool = False,
        logit_index: torch.Tensor | None = None,
    ):
        """Logits [B, T, V]; [B, 1, V] with last_only; [B, len(logit_index), V] at chosen positions.

        With targets, (logits, loss)."""
        B, T = idx.shape
        if positions is None:
            start = getattr(cache, "length", 0) if cache is not None else 0
            positions = torch.arange(start, start + T, device=idx.device)[None].expand(B, T)
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)
        else:
            rope = rope_cos_sin(positions, self.config.dim_head, self.config.rope_theta, x.dtype)
        for block in self.h:
            x = block(x, rope, cache)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:]
        elif logit_index is not None:
            x = x[:, logit_index]
        logits = self.lm_head(x)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Simple batched generation with a KV cache (all rows the same length)."""
        from gpt_model.sampling import sample_batch

        cache = KVCache()
        logits = self(idx, cache=cache, last_only=True)[:, -1]
        out = idx
        for _ in range(max_new_tokens):
            nxt = sample_batch(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if eos_token_id is not None and bool((nxt == eos_token_id).all()):
                break
            if out.shape[1] >= self.config.block_size:
                break
            logits = self(nxt[:, None], cache=cache)[:, -1]
        return out
