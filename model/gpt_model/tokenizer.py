"""Tokenizers: load from a directory (offline), build/train byte-level BPE, chat templates,
and incremental (streaming) detokenization.

Every tokenizer is a Hugging Face fast tokenizer, saved in the Hugging Face format
(tokenizer.json + tokenizer_config.json with the chat template), so our checkpoints load in
transformers too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gpt_model.paths import offline
from gpt_model.protocol import ChatMessage

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _wrap(tok: Tokenizer) -> Any:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf.chat_template = CHATML_TEMPLATE
    return hf


def byte_level_tokenizer() -> Any:
    """A byte-level BPE with no merges: 3 special tokens + 256 bytes. Needs no training."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return _wrap(tok)


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on `texts` (special tokens and chat template included)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return _wrap(tok)


def load_tokenizer(path: str | Path) -> Any:
    """AutoTokenizer from a local directory, never touching the network."""
    offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class ChatTokenizer:
    """A Hugging Face tokenizer plus what serving needs: chat prompts and stop tokens."""

    def __init__(self, hf: Any, extra_eos: Sequence[int] = ()):
        self.hf = hf
        if not getattr(hf, "chat_template", None):
            hf.chat_template = CHATML_TEMPLATE
        eos = {int(i) for i in extra_eos}
        if hf.eos_token_id is not None:
            eos.add(int(hf.eos_token_id))
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"):
            tid = hf.convert_tokens_to_ids(name) if name in hf.get_vocab() else None
            if tid is not None and tid != hf.unk_token_id:
                eos.add(int(tid))
        self.eos_token_ids = frozenset(eos)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> str:
        convo = [{"role": m.role, "content": m.content} for m in messages]
        return self.hf.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.encode(self.chat_prompt(messages))

    def save(self, path: str | Path) -> None:
        self.hf.save_pretrained(str(path))


class CountingTokenizer:
    """A saved tokenizer's counts without transformers (nor torch): tokenizer.json and its chat template.

    For a runtime in front of a separate engine, which only counts prompt tokens; the template is rendered the way
    transformers renders it (a sandboxed Jinja2 environment, trim_blocks and lstrip_blocks), and special tokens in
    the rendered text are matched by the tokenizer itself, so the counts are ChatTokenizer's.
    """

    def __init__(self, path: str | Path):
        import json

        from jinja2.sandbox import ImmutableSandboxedEnvironment

        root = Path(path)
        self.tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        config_path = root / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        template_path = root / "chat_template.jinja"
        template = template_path.read_text() if template_path.exists() else config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        env.globals["raise_exception"] = _raise_template_error
        self.template = env.from_string(template or CHATML_TEMPLATE)
        self.specials = {name: config[name] for name in ("bos_token", "eos_token") if isinstance(config.get(name), str)}

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> str:
        convo = [{"role": m.role, "content": m.content} for m in messages]
        return self.template.render(messages=convo, add_generation_prompt=True, **self.specials)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.encode(self.chat_prompt(messages))


def _raise_template_error(message: str) -> None:
    raise ValueError(f"chat template: {message}")


class StreamDecoder:
    """Turns generated token ids into text deltas without splitting UTF-8 characters.

    Decodes a small window (prefix + new tokens) each step, as vLLM does, so the cost per token
    does not grow with the length of the reply.
    """

    def __init__(self, tokenizer: ChatTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the end of the reply)."""
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix) :] if len(text) > len(prefix) else ""
