"""EngineConfig: every engine option, checked when it is made; unknown options are an error, not dropped."""

import dataclasses

import pytest
from gpt_model.engine_config import EngineConfig

pytestmark = pytest.mark.unit


def test_defaults_and_the_device_dependent_budgets():
    config = EngineConfig()
    assert (config.dtype, config.max_batch_size, config.max_queue, config.prefill_chunk) == ("float32", 32, 256, 512)
    assert config.kv_cache_budget_mb("cpu") == 1024 and config.kv_cache_budget_mb("cuda:0") == 8192
    assert config.prefix_cache_budget_mb("cpu") == 256
    assert EngineConfig(kv_cache_mb=2.0, prefix_cache_mb=0).prefix_cache_budget_mb("cuda") == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_batch_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("dtype", "float64"),
        ("max_batch_size", 0),
        ("max_queue", -1),
        ("prefill_chunk", 0),
        ("prefix_block", -16),
        ("max_context_tokens", 0),
        ("threads", 0),
        ("kv_cache_mb", 0),
        ("prefix_cache_mb", -1.0),
        ("cuda_graphs", "yes"),
        ("device", ""),
        ("max_batch_size", True),
    ],
)
def test_a_bad_value_is_a_value_error_naming_the_option(option, value):
    with pytest.raises(ValueError, match=f"engine option {option} "):
        EngineConfig(**{option: value})


def test_from_options_takes_none_as_the_default_and_refuses_unknown_options():
    config = EngineConfig.from_options(dtype="bfloat16", max_batch_size=None, kv_cache_mb=0.5)
    assert config == EngineConfig(dtype="bfloat16", kv_cache_mb=0.5)
    with pytest.raises(TypeError, match=r"unknown engine option\(s\): max_batch;"):
        EngineConfig.from_options(max_batch=4)


def test_small_batch_weights_are_float16_or_bfloat16_for_at_least_one_row():
    assert EngineConfig().small_batch_dtype is None
    assert EngineConfig(small_batch_dtype="float16", small_batch_rows=8).small_batch_rows == 8
    with pytest.raises(ValueError, match="engine option small_batch_dtype must be one of float16, bfloat16"):
        EngineConfig(small_batch_dtype="int8")
    with pytest.raises(ValueError, match="engine option small_batch_rows "):
        EngineConfig(small_batch_rows=0)
    assert EngineConfig().packed_weights is False
    with pytest.raises(ValueError, match="engine option packed_weights must be true or false"):
        EngineConfig(packed_weights="yes")  # type: ignore[arg-type]


def test_quantize_is_int8_on_float32_weights_and_excludes_the_float32_copies():
    assert EngineConfig().quantize is None
    assert EngineConfig(quantize="int8").quantize == "int8"
    with pytest.raises(ValueError, match="engine option quantize must be one of int8, not 'int4'"):
        EngineConfig(quantize="int4")
    with pytest.raises(ValueError, match="excludes small_batch_dtype and packed_weights"):
        EngineConfig(quantize="int8", small_batch_dtype="float16")
    with pytest.raises(ValueError, match="excludes small_batch_dtype and packed_weights"):
        EngineConfig(quantize="int8", packed_weights=True)
    with pytest.raises(ValueError, match="needs dtype float32, not 'bfloat16'"):
        EngineConfig(quantize="int8", dtype="bfloat16")
