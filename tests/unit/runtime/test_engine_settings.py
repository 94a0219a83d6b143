"""The runtime fills the engine's options from its settings (GPT_MODEL_*); the engine reads no environment."""

import pytest
from gpt_model.engine_config import EngineConfig
from gpt_runtime.settings import RuntimeSettings
from pydantic import ValidationError

pytestmark = pytest.mark.unit


def test_gpt_model_variables_become_engine_options(monkeypatch):
    for name, value in {
        "GPT_MODEL_THREADS": "2",
        "GPT_MODEL_KV_CACHE_MB": "64",
        "GPT_MODEL_MAX_BATCH_SIZE": "4",
        "GPT_MODEL_PREFIX_CACHE_MB": "0",
        "GPT_MODEL_CUDA_GRAPHS": "false",
        "GPT_MODEL_DEVICE": "cpu",
        "GPT_MAX_CONTEXT_TOKENS": "128",
        "GPT_MODEL_SMALL_BATCH_DTYPE": "float16",
        "GPT_MODEL_SMALL_BATCH_ROWS": "2",
        "GPT_MODEL_PACKED_WEIGHTS": "true",
    }.items():
        monkeypatch.setenv(name, value)
    config = EngineConfig.from_options(**RuntimeSettings().model_engine_options())
    assert (config.threads, config.kv_cache_mb, config.max_batch_size, config.prefix_cache_mb) == (2, 64, 4, 0)
    assert (config.cuda_graphs, config.device, config.max_context_tokens) == (False, "cpu", 128)
    assert (config.small_batch_dtype, config.small_batch_rows, config.packed_weights) == ("float16", 2, True)


def test_unset_blank_or_zero_threads_leave_the_engine_defaults(monkeypatch):
    for name in ("GPT_MODEL_CACHE_DIR", "GPT_MODEL_DTYPE", "GPT_MAX_CONTEXT_TOKENS", "GPT_MODEL_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPT_MODEL_THREADS", "0")
    monkeypatch.setenv("GPT_MODEL_KV_CACHE_MB", "")
    assert EngineConfig.from_options(**RuntimeSettings().model_engine_options()) == EngineConfig()


def test_a_bad_engine_setting_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("GPT_MODEL_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="model_max_batch_size"):
        RuntimeSettings()


def test_gpt_model_quantize_int8_becomes_the_engine_option_and_other_values_are_refused(monkeypatch):
    monkeypatch.setenv("GPT_MODEL_QUANTIZE", "int8")
    assert EngineConfig.from_options(**RuntimeSettings().model_engine_options()).quantize == "int8"
    monkeypatch.setenv("GPT_MODEL_QUANTIZE", "int4")
    with pytest.raises(ValidationError, match="model_quantize"):
        RuntimeSettings()
