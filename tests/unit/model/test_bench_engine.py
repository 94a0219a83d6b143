"""hack/bench_engine.py's pure parts: FLOPs per token, request batches, the ratio columns and the rows it prints."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

_spec = importlib.util.spec_from_file_location(
    "bench_engine", Path(__file__).resolve().parents[3] / "hack" / "bench_engine.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SMOLLM2_135M = {  # the converted embedded default's config.json
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "tie_word_embeddings": True,
}
GPT2_SMALL = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12}


def test_smollm2_matmul_parameters_plus_its_norms_are_its_published_parameter_count():
    params = bench.matmul_params(SMOLLM2_135M)
    norms = (2 * 30 + 1) * 576  # two RMSNorms a layer and the final one; the tied embedding is lm_head
    assert params + norms == 134_515_008
    assert bench.flops_per_token(SMOLLM2_135M) == 2 * params == 268_959_744


def test_gpt2_matmul_parameters_plus_the_rest_are_its_published_parameter_count():
    params = bench.matmul_params(GPT2_SMALL)  # n_inner absent: 4 x n_embd
    positions = 1024 * 768
    biases_and_norms = 12 * (2304 + 768 + 3072 + 768 + 4 * 768) + 2 * 768
    assert params + positions + biases_and_norms == 124_439_808


def test_request_batches_cover_every_request_once_in_batches_of_streams():
    assert [list(b) for b in bench.request_batches(8, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [list(b) for b in bench.request_batches(32, 32)] == [list(range(32))]
    assert [len(b) for b in bench.request_batches(32, 1)] == [1] * 32


def test_ratio_is_none_without_a_usable_reference():
    assert bench.ratio(6.0, 4.0) == 1.5
    assert bench.ratio(None, 4.0) is None
    assert bench.ratio(6.0, None) is None
    assert bench.ratio(6.0, 0.0) is None


def _row(mode: str, streams: int, tok_s: float) -> dict:
    return {"mode": mode, "streams": streams, "tok_s": tok_s}


def test_ratios_against_static_compute_and_weight_streaming():
    flops = 269_000_000
    limits = {"matmul_gflops": {"1": 2.69, "8": 26.9}, "stream_gbs": 5.0}  # 10 and 100 tok/s of compute
    weight_bytes = {"default": 500e6, "llamacpp": 100e6}  # 10 and 50 tok/s of weight streaming
    rows = [
        _row("baseline", 1, 5.0),
        {"mode": "static", "streams": 1, "requests": 1, "note": "n/a: one request at a time is the baseline"},
        _row("static", 8, 40.0),
        {"mode": "generate_batch", "streams": 8, "requests": 8, "note": "failed: RuntimeError: no"},
        _row("engine", 1, 6.0),
        _row("engine", 8, 60.0),
        _row("engine", 32, 90.0),
        _row("llamacpp", 1, 25.0),
    ]
    out = {(r["mode"], r["streams"]): r for r in bench.add_ratios(rows, limits, flops, weight_bytes)}

    assert out["engine", 8]["x_static"] == pytest.approx(1.5)
    assert out["engine", 8]["pct_compute"] == pytest.approx(60.0)
    assert out["engine", 8]["pct_stream"] is None  # only at 1 stream
    assert out["engine", 1]["x_static"] == pytest.approx(1.2)  # at 1 stream: against the baseline
    assert out["engine", 1]["pct_compute"] == pytest.approx(60.0)
    assert out["engine", 1]["pct_stream"] == pytest.approx(60.0)
    assert out["llamacpp", 1]["pct_stream"] == pytest.approx(50.0)  # its own bytes per token (the GGUF)
    assert out["engine", 32]["x_static"] is None  # no static batch nor matmul limit at 32
    assert out["engine", 32]["pct_compute"] is None
    assert out["generate_batch", 8]["x_static"] is None
    assert out["generate_batch", 8]["note"] == "failed: RuntimeError: no"
    assert out["static", 8]["x_static"] == pytest.approx(1.0)


def test_failed_row_shows_the_reason_on_one_line_in_the_table(capsys):
    row = bench.failed("generate_batch", 8, 32, RuntimeError("Inplace update\nto inference tensor"))
    assert row["note"] == "failed: RuntimeError: Inplace update to inference tensor"

    measured = bench.summarise(
        {
            "mode": "engine",
            "streams": 8,
            "requests": 8,
            "tokens": 512,
            "tok_s": 40.0,
            "ttft": [0.5],
            "itl": [0.1, 0.2],
            "rss_mb": 1000.0,
            "gpu_mb": 0.0,
        }
    )
    rows = bench.add_ratios(
        [bench.summarise(row), measured], {"matmul_gflops": {"8": 26.9}, "stream_gbs": 5.0}, 269e6, {"default": 5e8}
    )
    bench.print_table("smollm2-135m", rows, "cpu")
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("generate_batch") and line.endswith("failed: RuntimeError: Inplace update to inference tensor")
        for line in lines
    )
    engine = next(line for line in lines if line.startswith("engine"))
    assert engine.split()[-3:] == ["n/a", "40.0", "-"]  # no static at 8; 40 of 100 tok/s; % stream at 1 only
