"""Architectures our code does not implement are served through transformers' AutoModelForCausalLM."""

import asyncio

import pytest
import torch
from gpt_model.checkpoint import load_source
from gpt_model.engine import ModelEngine
from gpt_model.engine_config import EngineConfig
from gpt_model.protocol import ChatMessage, GenerationRequest, SamplingParams, collect
from gpt_model.tokenizer import byte_level_tokenizer

pytestmark = pytest.mark.unit


@pytest.fixture
def neox_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = byte_level_tokenizer()
    cfg = transformers.GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        eos_token_id=None,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, model


def test_unsupported_architecture_falls_back_and_batches_correctly(neox_dir):
    path, hf = neox_dir
    loaded = load_source(str(path))
    assert loaded.config is None  # not our GPT: the transformers model serves it
    assert loaded.context_window == 128

    prompts = ["one", "two two", "three three three"]

    async def main():
        engine = ModelEngine(str(path), EngineConfig(device="cpu"), loaded=loaded)
        engine.tokenizer.eos_token_ids = frozenset()
        outs = await asyncio.gather(
            *[
                collect(
                    engine,
                    GenerationRequest(
                        f"r{i}", [ChatMessage("user", p)], SamplingParams(temperature=0, max_tokens=8 + i)
                    ),
                )
                for i, p in enumerate(prompts)
            ]
        )
        await engine.close()
        return engine, outs

    engine, outs = asyncio.run(main())
    for i, (p, (text, fin)) in enumerate(zip(prompts, outs, strict=True)):
        ids = torch.tensor([engine.tokenizer.encode_chat([ChatMessage("user", p)])])
        expected = hf.generate(ids, max_new_tokens=8 + i, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert text == engine.tokenizer.decode(expected[0, ids.shape[1] :].tolist())
        assert fin.usage.completion_tokens == 8 + i


def test_hf_source_reads_the_local_hub_cache_only(tmp_path, monkeypatch):
    from gpt_model.checkpoint import build_tiny, save_checkpoint

    model, tok = build_tiny(seed=2)
    snapshot = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / ("a" * 40)
    save_checkpoint(snapshot, model, tok)
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_source("hf:acme/tiny-chat")
    assert loaded.model_id == "acme/tiny-chat"
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), model(idx))
    assert load_source("hf:acme/tiny-chat", revision="a" * 40).model_id == "acme/tiny-chat"
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_source("hf:acme/tiny-chat", revision="b" * 40)
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_source("hf:acme/absent")
