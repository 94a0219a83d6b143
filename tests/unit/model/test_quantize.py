"""int8 weights (gpt_model.quantize): SmoothQuant smoothing, fbgemm dynamic int8 matmuls, no float32 copies left."""

import pytest
import torch
from gpt_model.gpt import Linear
from gpt_model.quantize import calibration_prompts, quantize_int8, smoothing
from gpt_model.tokenizer import ChatTokenizer, byte_level_tokenizer

from tests.unit.model.test_gpt import CONFIGS, _model

pytestmark = pytest.mark.unit


def _int8_calls(model, x) -> tuple[torch.Tensor, int]:
    with torch.profiler.profile() as prof:
        out = model(x)
    return out, sum(e.count for e in prof.key_averages() if e.key == "quantized::linear_dynamic")


@CONFIGS
@torch.inference_mode()
def test_int8_weights_keep_the_logits_close_and_drop_the_float32_copies(config):
    model = _model(config)
    x = torch.randint(0, config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(3))
    ref = model(x)
    embedding = model.wte.weight.clone()
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    weights = sum(m.weight.numel() for m in linears)
    calibration = torch.randint(0, config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(4)).tolist()
    int8_bytes = quantize_int8(model, calibration)
    out, calls = _int8_calls(model, x)
    assert calls == len(linears)  # every matmul runs in int8
    rows = sum(m.out_features for m in linears)
    assert int8_bytes == weights + 8 * rows  # one byte per weight, plus a scale per row
    # a few percent off (the tiny random models measure 3-5 %; a scale folded twice or not at all: over 200 %)
    error = (out - ref).abs().mean() / ref.abs().mean()
    assert 0 < error < 0.1, error
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    # the float32 matmul weights are gone; an embedding the head shares is kept, unchanged
    tied = model.lm_head.weight is model.wte.weight
    assert all(m.weight.numel() == 0 for m in linears if not (tied and m is model.lm_head))
    assert torch.equal(model.wte.weight, embedding)


@torch.inference_mode()
def test_smoothing_moves_an_outlier_input_channel_into_the_weights():
    """A channel 50x larger than the rest, as language models have: quantizing the input to 7 bits loses the small
    channels unless smoothing moves the range into the weights."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=gen) * 0.05
    x = torch.randn(16, 64, generator=gen)
    x[:, 5] *= 50
    ref = torch.nn.functional.linear(x, weight)
    errors = {}
    for smooth in (False, True):
        layer = Linear(64, 48, bias=False)
        layer.weight.data = weight.clone()
        scale = smoothing(x.abs().amax(0), weight) if smooth else None
        layer.keep_int8(scale, runtime_scale=True)
        errors[smooth] = float((layer(x) - ref).abs().mean() / ref.abs().mean())
    assert errors[True] < errors[False] / 2, errors


def test_int8_weights_need_float32_weights_on_a_cpu():
    layer = Linear(8, 4).to(torch.bfloat16)
    with pytest.raises(ValueError, match="int8 weights need float32 weights on a CPU"):
        layer.keep_int8()


def test_calibration_prompts_are_chat_prompts_in_the_tokenizers_ids():
    tokenizer = ChatTokenizer(byte_level_tokenizer())
    prompts = calibration_prompts(tokenizer)
    assert len(prompts) >= 8 and all(len(p) > 10 for p in prompts)
    assert "Moon" in tokenizer.decode(prompts[4])
