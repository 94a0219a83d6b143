"""Our model against itself (causality, KV cache) and against transformers (same weights)."""

import pytest
import torch
from gpt_model.checkpoint import hf_to_ours, load_checkpoint, ours_to_hf, save_checkpoint
from gpt_model.config import PRESETS, GPTConfig, preset
from gpt_model.gpt import GPT, KVCache
from gpt_model.tokenizer import ChatTokenizer, byte_level_tokenizer

pytestmark = pytest.mark.unit

GPT2_TINY = GPTConfig(family="gpt2", vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=64)
LLAMA_TINY = GPTConfig(
    family="llama",
    vocab_size=97,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=32,
    intermediate_size=48,
    block_size=64,
    bias=False,
    rope_theta=500.0,
    tie_word_embeddings=False,
    norm_eps=1e-6,
)
CONFIGS = pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])


def _model(config: GPTConfig, seed: int = 0) -> GPT:
    model = GPT(config).init_weights(seed).eval()
    torch.manual_seed(seed)
    with torch.no_grad():  # larger random weights than the init, so mistakes show in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@CONFIGS
def test_causality_future_tokens_never_change_past_logits(config):
    model = _model(config)
    idx = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 12:] = (changed[:, 12:] + 7) % config.vocab_size
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


@CONFIGS
def test_kv_cache_decode_equals_full_forward(config):
    model = _model(config)
    idx = torch.randint(0, config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(2))
    full = model(idx)
    cache = KVCache()
    parts = [model(idx[:, :5], cache=cache)]  # prefill 5, then a chunk of 4, then one at a time
    parts.append(model(idx[:, 5:9], cache=cache))
    for t in range(9, 16):
        parts.append(model(idx[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)


def _hf_pair(family: str):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, attn_implementation="eager"
        )
        hf = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_theta=500.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
        hf = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return hf.eval()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logits_match_transformers_on_the_same_weights(family):
    hf = _hf_pair(family)
    config = GPTConfig.from_hf_config(hf.config.to_dict())
    assert config.family == family
    ours = GPT(config)
    ours.load_state_dict(hf_to_ours(config, hf.state_dict()), strict=not config.tie_word_embeddings)
    ours.eval()
    idx = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
    torch.testing.assert_close(ours(idx), expected, rtol=1e-4, atol=1e-4)
    # and back: our names map onto theirs exactly
    back = ours_to_hf(config, ours.state_dict())
    theirs = {k: v for k, v in hf.state_dict().items() if not k.endswith((".attn.bias", ".masked_bias"))}
    if config.tie_word_embeddings:
        theirs.pop("lm_head.weight", None)
    assert set(back) == set(theirs)
    for k, v in back.items():
        torch.testing.assert_close(v, theirs[k])


def test_bfloat16_runs_and_stays_close_to_float32():
    model = _model(LLAMA_TINY)
    idx = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(4))
    ref = model(idx)
    low = _model(LLAMA_TINY).to(torch.bfloat16)(idx)
    assert low.dtype == torch.bfloat16
    assert (low.float().softmax(-1) - ref.softmax(-1)).abs().max() < 0.05


@CONFIGS
def test_save_and_load_round_trip_local_dir(tmp_path, config):
    tok = ChatTokenizer(byte_level_tokenizer())
    config = preset(
        "tiny",
        family=config.family,
        vocab_size=tok.vocab_size,
        bias=config.family == "gpt2",
        n_kv_head=None if config.family == "gpt2" else 2,
        block_size=64,
    )
    model = _model(config)
    save_checkpoint(tmp_path / "ckpt", model, tok)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == config
    idx = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loaded.model(idx), model(idx))
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("héllo ✓")) == "héllo ✓"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_loads_a_directory_written_by_transformers(tmp_path, family):
    hf = _hf_pair(family)
    hf.save_pretrained(tmp_path / "hf")
    tok = byte_level_tokenizer()
    tok.save_pretrained(tmp_path / "hf")
    loaded = load_checkpoint(tmp_path / "hf")
    assert loaded.config is not None and loaded.config.family == family
    idx = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), hf(input_ids=idx).logits, rtol=1e-4, atol=1e-4)


def test_transformers_reads_our_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _model(LLAMA_TINY)
    save_checkpoint(tmp_path / "ours", model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", local_files_only=True).eval()
    idx = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model(idx), rtol=1e-4, atol=1e-4)


def test_presets_span_10m_to_2b_and_match_real_parameter_counts():
    counts = {name: cfg.num_parameters() for name, cfg in PRESETS.items()}
    assert 8e6 <= counts["gpt2-10m"] <= 12e6
    assert 1.5e9 <= max(counts.values()) <= 2.5e9
    assert 120e6 <= counts["gpt2-124m"] <= 130e6
    assert 130e6 <= counts["smollm2-135m"] <= 140e6
    # the formula agrees with the real module for both families
    for name in ("tiny", "gpt2-10m", "llama-10m"):
        assert GPT(PRESETS[name]).num_parameters() == counts[name], name


def test_generate_greedy_is_deterministic_and_respects_length():
    model = _model(LLAMA_TINY)
    idx = torch.tensor([[1, 2, 3]])
    a = model.generate(idx, 10)
    b = model.generate(idx, 10)
    assert a.shape == (1, 13) and torch.equal(a, b)
    # greedy through the cache equals greedy by full forwards
    seq = idx
    for _ in range(10):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(a, seq)


@CONFIGS
def test_small_batch_weights_serve_small_forwards_only_and_stay_close(config):
    model = _model(config)
    x1, x3 = torch.randint(0, config.vocab_size, (1, 1)), torch.randint(0, config.vocab_size, (3, 1))
    with torch.no_grad():
        ref1, ref3 = model(x1), model(x3)
        copies = model.use_small_batch_weights(torch.float16, rows=2)
        small1, small3 = model(x1), model(x3)
        dropped = model.use_small_batch_weights(None, rows=0)
        again1 = model(x1)
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert copies == 2 * linear_params  # float16: two bytes per weight, biases stay float32
    assert dropped == 0
    # one row uses the float16 copy: close to float32, and not bit-identical (the copy is really used)
    assert small1.dtype == torch.float32
    torch.testing.assert_close(small1, ref1, atol=2e-2, rtol=2e-2)
    assert not torch.equal(small1, ref1)
    # three rows are over the limit: the float32 weights, exactly
    assert torch.equal(small3, ref3)
    assert torch.equal(again1, ref1)


@CONFIGS
def test_packed_weights_serve_forwards_up_to_their_rows_with_the_same_logits(config):
    model = _model(config)
    x4, x9 = torch.randint(0, config.vocab_size, (4, 1)), torch.randint(0, config.vocab_size, (9, 1))
    with torch.no_grad():
        ref4, ref9 = model(x4), model(x9)
        copies = model.use_packed_weights(rows=8)
        with torch.profiler.profile() as prof:
            packed4 = model(x4)
        used4 = sum(e.count for e in prof.key_averages() if e.key == "aten::mkldnn_linear")
        with torch.profiler.profile() as prof:
            packed9 = model(x9)
        used9 = sum(e.count for e in prof.key_averages() if e.key == "aten::mkldnn_linear")
        assert model.use_packed_weights(rows=0) == 0
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert copies == 4 * sum(m.weight.numel() for m in linears)
    assert used4 == len(linears) and used9 == 0  # 9 rows are over the limit: the plain weights
    torch.testing.assert_close(packed4, ref4, atol=1e-4, rtol=1e-4)
    assert torch.equal(packed9, ref9)
    assert all(m.packed is None for m in linears)
