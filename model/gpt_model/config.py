"""One config dataclass for both model families, presets, and Hugging Face config.json mapping.

- family "gpt2": learned positions, LayerNorm with bias, GELU (tanh) MLP, full multi-head attention.
- family "llama": RoPE, RMSNorm, SwiGLU MLP, grouped-query attention (n_kv_head <= n_head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

Family = Literal["gpt2", "llama"]


class UnsupportedArchitecture(ValueError):
    """A checkpoint our own model code does not implement (the transformers fallback may)."""


@dataclass(frozen=True)
class GPTConfig:
    family: Family = "gpt2"
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # None: same as n_head (no grouping)
    intermediate_size: int | None = None  # None: 4 * n_embd (gpt2) or the Llama rule (llama)
    head_dim: int | None = None  # None: n_embd // n_head
    block_size: int = 1024  # max positions (context window)
    bias: bool = True  # biases in linear layers (gpt2: yes; llama: no)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.family not in ("gpt2", "llama"):
            raise ValueError(f"unknown family {self.family!r}")
        if self.n_head % self.kv_heads:
            raise ValueError("n_head must be a multiple of n_kv_head")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.intermediate_size:
            return self.intermediate_size
        if self.family == "gpt2":
            return 4 * self.n_embd
        hidden = int(2 * 4 * self.n_embd / 3)
        return 256 * ((hidden + 255) // 256)

    def num_parameters(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        e, v, f, d = self.n_embd, self.vocab_size, self.ffn_dim, self.dim_head
        q, kv = self.n_head * d, self.kv_heads * d
        attn = e * q + 2 * e * kv + q * e
        if self.family == "gpt2":
            attn += q + 2 * kv + e if self.bias else 0
            mlp = 2 * e * f + ((f + e) if self.bias else 0)
            norms = 4 * e
        else:
            attn += (q + 2 * kv) if self.bias else 0
            mlp = 3 * e * f
            norms = 2 * e
        total = self.n_layer * (attn + mlp + norms) + v * e + (2 * e if self.family == "gpt2" else e)
        if self.family == "gpt2":
            total += self.block_size * e
        if not self.tie_word_embeddings:
            total += v * e
        return total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eos_token_id"] = list(self.eos_token_id)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "eos_token_id" in kwargs:
            kwargs["eos_token_id"] = _as_tuple(kwargs["eos_token_id"])
        return cls(**kwargs)

    # Hugging Face config.json -----------------------------------------------------------------

    def to_hf_config(self) -> dict[str, Any]:
        """A config.json that transformers reads (GPT2LMHeadModel / LlamaForCausalLM)."""
        eos: Any = list(self.eos_token_id)
        if len(eos) == 1:
            eos = eos[0]
        elif not eos:
            eos = None
        if self.family == "gpt2":
            return {
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": self.vocab_size,
                "n_positions": self.block_size,
                "n_embd": self.n_embd,
                "n_layer": self.n_layer,
                "n_head": self.n_head,
                "n_inner": self.ffn_dim,
                "activation_function": "gelu_new",
                "layer_norm_epsilon": self.norm_eps,
                "tie_word_embeddings": self.tie_word_embeddings,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": eos,
            }
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.n_embd,
            "intermediate_size": self.ffn_dim,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.dim_head,
            "max_position_embeddings": self.block_size,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "silu",
            "attention_bias": self.bias,
            "mlp_bias": False,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
        }

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> GPTConfig:
        """Map a transformers config.json; raises UnsupportedArchitecture for anything else."""
        model_type = hf.get("model_type")
        eos = _as_tuple(hf.get("eos_token_id"))
        if model_type == "gpt2":
            act = hf.get("activation_function", "gelu_new")
            if act not in ("gelu_new", "gelu_pytorch_tanh"):
                raise UnsupportedArchitecture(f"gpt2 activation {act!r}")
            if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
                raise UnsupportedArchitecture("gpt2 attention variants")
            return cls(
                family="gpt2",
                vocab_size=hf["vocab_size"],
                n_layer=hf["n_layer"],
                n_head=hf["n_head"],
                n_embd=hf["n_embd"],
                intermediate_size=hf.get("n_inner") or 4 * hf["n_embd"],
                block_size=hf.get("n_positions", 1024),
                bias=True,
                norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                tie_word_embeddings=hf.get("tie_word_embeddings", True),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=eos,
            )
        if model_type in ("llama", "mistral"):
            if hf.get("hidden_act", "silu") != "silu":
                raise UnsupportedArchitecture(f"activation {hf.get('hidden_act')!r}")
            scaling = hf.get("rope_scaling") or {}
            rope_type = scaling.get("rope_type", scaling.get("type", "default"))
            if rope_type not in ("default", None):
                raise UnsupportedArchitecture(f"rope scaling {rope_type!r}")
            if hf.get("mlp_bias"):
                raise UnsupportedArchitecture("mlp_bias")
            if model_type == "mistral" and hf.get("sliding_window"):
                raise UnsupportedArchitecture("sliding window attention")
            rope_params = hf.get("rope_parameters") or {}
            theta = hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))
            return cls(
                family="llama",
                vocab_size=hf["vocab_size"],
                n_layer=hf["num_hidden_layers"],
                n_head=hf["num_attention_heads"],
                n_embd=hf["hidden_size"],
                n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                head_dim=_head_dim(hf),
                block_size=hf.get("max_position_embeddings", 2048),
                bias=bool(hf.get("attention_bias", False)),
                norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=float(theta),
                tie_word_embeddings=hf.get("tie_word_embeddings", False),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=eos,
            )
        raise UnsupportedArchitecture(f"model_type {model_type!r}")


def _head_dim(hf: dict[str, Any]) -> int | None:
    value = hf.get("head_dim")
    return None if value in (None, hf["hidden_size"] // hf["num_attention_heads"]) else int(value)


def _as_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


# Presets: our own model sizes, ~10M to ~2B parameters (vocab sizes are defaults; a trained
# tokenizer's size replaces them).
PRESETS: dict[str, GPTConfig] = {
    # a few hundred thousand parameters: unit tests and `builtin:tiny`
    "tiny": GPTConfig(
        family="llama",
        vocab_size=512,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        intermediate_size=128,
        block_size=1024,
        bias=False,
        tie_word_embeddings=True,
    ),
    "gpt2-10m": GPTConfig(family="gpt2", vocab_size=8192, n_layer=6, n_head=8, n_embd=320, block_size=512),
    "gpt2-124m": GPTConfig(family="gpt2", vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
    "gpt2-350m": GPTConfig(family="gpt2", vocab_size=50257, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774m": GPTConfig(family="gpt2", vocab_size=50257, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1.5b": GPTConfig(family="gpt2", vocab_size=50257, n_layer=48, n_head=25, n_embd=1600),
    "llama-10m": GPTConfig(
        family="llama",
        vocab_size=8192,
        n_layer=8,
        n_head=8,
        n_kv_head=4,
        n_embd=256,
        intermediate_size=768,
        block_size=1024,
        bias=False,
    ),
    "smollm2-135m": GPTConfig(
        family="llama",
        vocab_size=49152,
        n_layer=30,
        n_head=9,
        n_kv_head=3,
        n_embd=576,
        intermediate_size=1536,
        block_size=8192,
        bias=False,
        norm_eps=1e-5,
        rope_theta=100000.0,
    ),
    "smollm2-360m": GPTConfig(
        family="llama",
        vocab_size=49152,
        n_layer=32,
        n_head=15,
        n_kv_head=5,
        n_embd=960,
        intermediate_size=2560,
        block_size=8192,
        bias=False,
        norm_eps=1e-5,
        rope_theta=100000.0,
    ),
    "llama-1b": GPTConfig(
        family="llama",
        vocab_size=32000,
        n_layer=22,
        n_head=32,
        n_kv_head=4,
        n_embd=2048,
        intermediate_size=5632,
        block_size=2048,
        bias=False,
        tie_word_embeddings=False,
    ),
    "llama-2b": GPTConfig(
        family="llama",
        vocab_size=49152,
        n_layer=24,
        n_head=32,
        n_kv_head=32,
        n_embd=2048,
        intermediate_size=8192,
        block_size=8192,
        bias=False,
        rope_theta=130000.0,
    ),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """A preset by name, with field overrides (e.g. vocab_size from a tokenizer)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    return replace(base, **overrides)
