"""int8 weights for CPU inference: SmoothQuant's smoothing, calibrated when the model loads, then fbgemm's dynamic
int8 linear for every matmul.

A decode step on a CPU reads every weight once per step; int8 weights are a quarter of float32's bytes, and fbgemm's
int8 kernels are also faster than float32 at 32 rows. The cost is accuracy: fbgemm quantizes each matmul's input
per call to 7 bits (8 overflow its int16 sums on AVX2), and a few input channels of a language model carry values
tens of times larger than the rest, which such a coarse grid loses. SmoothQuant (Xiao et al., 2023) moves that range
from the inputs into the weights: input channel j is divided by s_j and the weight's column j multiplied by it, with
s_j = max|x_j|^alpha / max|W_j|^(1-alpha), from the inputs seen on a few calibration prompts. The division is folded
into the norm before a matmul (qkv, gate/up, lm_head) or into the rows of `up` (down), so it costs nothing at run
time; only o_proj scales its input per call. `hack/eval_quality.py` measures what is left (perplexity, top-1 and
greedy agreement against float32).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from gpt_model.gpt import GPT, Block, Linear, RMSNorm
from gpt_model.protocol import ChatMessage
from gpt_model.tokenizer import ChatTokenizer

ALPHA = 0.5
# calibration prompts: chat turns of several kinds (not the texts hack/eval_quality.py scores)
CALIBRATION = (
    "Hello! How can I help you today?",
    "Summarize the following article in two sentences: the town library will close for renovation in May.",
    "The quick brown fox jumps over the lazy dog near the bank of the river.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "In 1969, astronauts landed on the Moon for the first time, watched by millions on television.",
    "Please translate 'good morning' into French, German and Spanish.",
    "List three healthy breakfast ideas and explain why each one is good for you.",
    '{"name": "Ada", "languages": ["en", "fr"], "active": true}',
)


def calibration_prompts(tokenizer: ChatTokenizer) -> list[list[int]]:
    """The calibration texts as chat prompts, in `tokenizer`'s ids."""
    return [tokenizer.encode_chat([ChatMessage("user", text)]) for text in CALIBRATION]


@torch.inference_mode()
def input_ranges(model: GPT, prompts: list[list[int]]) -> dict[Linear, torch.Tensor]:
    """The largest |input| per input channel of every Linear over forwards of `prompts`."""
    ranges: dict[Linear, torch.Tensor] = {}

    def recorder(linear: Linear):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            seen = ranges.get(linear)
            ranges[linear] = x if seen is None else torch.maximum(seen, x)

        return record

    hooks = [m.register_forward_pre_hook(recorder(m)) for m in model.modules() if isinstance(m, Linear)]
    try:
        for ids in prompts:
            model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def smoothing(input_max: torch.Tensor, weight: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """SmoothQuant's per-input-channel scale s: the input is divided by s and the weight's columns multiplied by it."""
    weight_max = weight.abs().amax(0).clamp(min=1e-5)
    return (input_max.clamp(min=1e-5) ** alpha / weight_max ** (1 - alpha)).clamp(min=1e-5)


@torch.inference_mode()
def quantize_int8(model: GPT, prompts: list[list[int]], alpha: float = ALPHA) -> int:
    """Calibrate on `prompts` (token ids; see `calibration_prompts`), smooth and replace every matmul weight of
    `model` (CPU, float32) by int8; the float32 copies are dropped, except a weight the embedding shares. Returns
    the bytes the int8 weights take."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:  # before any norm is scaled
        raise ValueError("int8 weights are for float32 models on a CPU")
    ranges = input_ranges(model, prompts)
    total = 0
    for layer in model.h:
        block = cast(Block, layer)
        attn, mlp = block.attn, block.mlp
        total += attn.qkv.keep_int8(_folded(block.ln_1, attn.qkv, ranges, alpha))
        total += attn.o_proj.keep_int8(smoothing(ranges[attn.o_proj], attn.o_proj.weight, alpha), runtime_scale=True)
        if mlp.gated:  # down's input is silu(gate) * up: its scale goes into up's rows
            down_scale = smoothing(ranges[mlp.down], mlp.down.weight, alpha)
            with torch.no_grad():
                mlp.gate_up.weight[mlp.down.in_features :].div_(down_scale[:, None])
            total += mlp.down.keep_int8(down_scale)
            total += mlp.gate_up.keep_int8(_folded(block.ln_2, mlp.gate_up, ranges, alpha))
        else:  # gpt2: a GELU between fc and proj
            total += mlp.fc.keep_int8(_folded(block.ln_2, mlp.fc, ranges, alpha))
            total += mlp.proj.keep_int8(smoothing(ranges[mlp.proj], mlp.proj.weight, alpha), runtime_scale=True)
    total += model.lm_head.keep_int8(_folded(model.ln_f, model.lm_head, ranges, alpha))
    shared = model.wte.weight
    for module in model.modules():
        if isinstance(module, Linear) and module.weight is not shared:
            module.weight = nn.Parameter(torch.empty(0), requires_grad=False)  # int8 from now on
    return total


def _folded(
    norm: RMSNorm | nn.LayerNorm, linear: Linear, ranges: dict[Linear, torch.Tensor], alpha: float
) -> torch.Tensor:
    """The smoothing of `linear`, divided out of the norm that feeds it."""
    scale = smoothing(ranges[linear], linear.weight, alpha)
    with torch.no_grad():
        norm.weight.div_(scale)
        if isinstance(norm, nn.LayerNorm) and norm.bias is not None:
            norm.bias.div_(scale)
    return scale
