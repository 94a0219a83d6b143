"""Every option of the model engine (gpt_model.engine.ModelEngine) in one frozen dataclass, checked when it is made.

Torch-free: the runtime builds it from its settings (GPT_MODEL_*) without importing the model code. The engine
reads no environment variables; whatever the environment says comes in through here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")
SMALL_BATCH_DTYPES = ("float16", "bfloat16")
QUANTIZE = ("int8",)


@dataclass(frozen=True)
class EngineConfig:
    dtype: str = "float32"  # the weights' dtype: float32, bfloat16 or float16
    max_context_tokens: int | None = None  # caps the model's context window
    cache_dir: str | None = None  # converted and downloaded models (default: gpt_model.paths.cache_root())
    device: str | None = None  # default: cuda when available, else cpu
    max_batch_size: int = 32  # requests decoded together (the KV cache's slots)
    max_queue: int = 256  # requests waiting for a slot; more are refused (EngineOverloaded)
    prefill_chunk: int = 512  # prompt tokens prefilled per step (longer prompts go in chunks between decode steps)
    threads: int | None = None  # torch's CPU threads (default: torch's own)
    kv_cache_mb: float | None = None  # the KV cache's memory budget (default: 1024 on CPU, 8192 on CUDA)
    prefix_cache_mb: float | None = None  # reused prompt prefixes (default: kv_cache_mb / 4; 0 disables)
    prefix_block: int = 16  # tokens per prefix cache block (0 disables the prefix cache)
    cuda_graphs: bool | None = None  # replay decode steps as CUDA graphs (default: on for CUDA)
    revision: str | None = None  # the revision of an hf: source
    # a float16/bfloat16 copy of the matmul weights for decode steps of at most small_batch_rows sequences: about
    # twice the tokens/s of a lone stream on a CPU, for half the weights' memory again (hack/eval_quality.py: float16
    # changes no greedy token there); None: float32 weights only
    small_batch_dtype: str | None = None
    small_batch_rows: int = 4
    # a oneDNN-packed copy of the matmul weights for decode steps on a CPU (float32): MKL repacks the weights on
    # every call, which at 8-32 streams costs as much as the product (about 1.3x the tokens/s there), for the
    # weights' memory again
    packed_weights: bool = False
    # int8 matmul weights on a CPU (gpt_model.quantize: SmoothQuant calibrated at load, fbgemm's dynamic int8
    # linear): a quarter of float32's weight memory and bytes per token, for some accuracy (hack/eval_quality.py)
    quantize: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"engine option dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.small_batch_dtype is not None and self.small_batch_dtype not in SMALL_BATCH_DTYPES:
            raise ValueError(
                f"engine option small_batch_dtype must be one of {', '.join(SMALL_BATCH_DTYPES)}, "
                f"not {self.small_batch_dtype!r}"
            )
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"engine option quantize must be one of {', '.join(QUANTIZE)}, not {self.quantize!r}")
        if self.quantize is not None and (self.small_batch_dtype is not None or self.packed_weights is True):
            raise ValueError(
                "engine option quantize replaces the float32 weights: it excludes small_batch_dtype "
                "and packed_weights, which copy them"
            )
        if self.quantize is not None and self.dtype != "float32":
            raise ValueError(f"engine option quantize needs dtype float32, not {self.dtype!r}")
        _check_int(self, "small_batch_rows", 1)
        _check_int(self, "max_batch_size", 1)
        _check_int(self, "max_queue", 0)
        _check_int(self, "prefill_chunk", 1)
        _check_int(self, "prefix_block", 0)
        _check_int(self, "max_context_tokens", 1, optional=True)
        _check_int(self, "threads", 1, optional=True)
        _check_number(self, "kv_cache_mb", positive=True)
        _check_number(self, "prefix_cache_mb", positive=False)
        if not isinstance(self.packed_weights, bool):
            raise ValueError(f"engine option packed_weights must be true or false, not {self.packed_weights!r}")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"engine option cuda_graphs must be true or false, not {self.cuda_graphs!r}")
        for name in ("cache_dir", "device", "revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"engine option {name} must be a non-empty string, not {value!r}")

    @classmethod
    def from_options(cls, **options: object) -> EngineConfig:
        """A config from keyword options, as callers and the registry pass them: None means the default; an
        unknown option is a TypeError that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]

    def kv_cache_budget_mb(self, device: str) -> float:
        """kv_cache_mb, or the default for `device`."""
        if self.kv_cache_mb is not None:
            return self.kv_cache_mb
        return 8192.0 if device.startswith("cuda") else 1024.0

    def prefix_cache_budget_mb(self, device: str) -> float:
        """prefix_cache_mb, or a quarter of the KV cache budget."""
        return self.kv_cache_budget_mb(device) / 4 if self.prefix_cache_mb is None else self.prefix_cache_mb


def _check_int(config: EngineConfig, name: str, least: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"engine option {name} must be an integer >= {least}, not {value!r}")


def _check_number(config: EngineConfig, name: str, positive: bool) -> None:
    value = getattr(config, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ValueError(f"engine option {name} must be a number {'>' if positive else '>='} 0, not {value!r}")
