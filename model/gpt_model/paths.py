"""Where models are kept on disk; torch-free, so light processes (a runtime in front of a separate engine) can
find a converted model without importing the model code."""

from __future__ import annotations

import os
from pathlib import Path

SMOLLM2_DIRNAME = "smollm2-135m-instruct"  # the converted embedded default, under cache_root()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The model cache: `cache_dir`, else $GPT_MODEL_CACHE_DIR, else ~/.cache/gpt-operator."""
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("GPT_MODEL_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "gpt-operator"
