"""Constrained decoding: pick the best token that keeps the output a valid prefix of the JSON asked for.

Each step the candidates come in the order the sampler prefers them (greedy: by logit; sampling: by
logit/temperature plus Gumbel noise from the request's generator, which is sampling without
replacement, with top-k/top-p applied first and the other tokens after). A vectorised mask on each
token's first character drops most impossible tokens; the first candidate whose text the validator
accepts, and after which the document can still be closed within the token budget, wins. When no
candidate fits, the engine appends the closing text itself ("force-closing").

Tokens that are not whole UTF-8 characters (byte pieces) and special tokens are never chosen under
a constraint, so a constrained reply holds only characters the vocabulary has whole tokens for.
"""

from __future__ import annotations

import torch

from gpt_model.json_prefix import JSONPrefix
from gpt_model.protocol import SamplingParams, TokenLogprob, TopLogprob
from gpt_model.sampling import filter_logits

MAX_CHECKS = 256  # candidates tried per step before falling back to single characters
NO_LOGPROB = -9999.0  # OpenAI's value for a token whose probability is not known (or zero)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes (the inverse of bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenTable:
    """Every token id's bytes and text (text None: special, or not whole UTF-8 characters)."""

    def __init__(self, tokenizer, vocab_size: int):
        from tokenizers import decoders

        hf = tokenizer.hf
        n = len(hf)
        special = set(hf.all_special_ids) | set(getattr(hf, "added_tokens_decoder", {}) or {})
        byte_level = isinstance(hf.backend_tokenizer.decoder, decoders.ByteLevel)
        pieces = hf.convert_ids_to_tokens(list(range(n)))
        byte_of = _byte_decoder()
        self.bytes: list[bytes] = []  # special tokens: their name, for display
        self.text: list[str | None] = []
        for i in range(vocab_size):
            if i >= n or i in special:
                self.bytes.append((pieces[i] or "").encode() if i < n else b"")
                self.text.append(None)
                continue
            if byte_level and pieces[i] is not None and all(ch in byte_of for ch in pieces[i]):
                raw = bytes(byte_of[ch] for ch in pieces[i])
            else:
                raw = tokenizer.decode([i]).encode()
            self.bytes.append(raw)
            try:
                text = raw.decode("utf-8") if raw else None
            except UnicodeDecodeError:
                text = None
            self.text.append(text if text and "\ufffd" not in text else None)
        self.first = torch.tensor([ord(t[0]) if t else -1 for t in self.text], dtype=torch.long)
        self.single: dict[str, int] = {}
        for i, t in enumerate(self.text):
            if t is not None and len(t) == 1:
                self.single.setdefault(t, i)
        self.tokenizer = tokenizer
        self._firsts: dict[str, torch.Tensor] = {}

    def display(self, token_id: int) -> str:
        return self.bytes[token_id].decode("utf-8", errors="replace")

    def mask(self, allowed: str | None, device: torch.device) -> torch.Tensor:
        """Tokens whose first character is in `allowed` (None: any character from U+0020 up)."""
        first = self.first if self.first.device == device else self.first.to(device)
        self.first = first
        if allowed is None:
            return first >= 32
        ords = self._firsts.get(allowed)
        if ords is None:
            ords = self._firsts[allowed] = torch.tensor([ord(c) for c in allowed], dtype=torch.long)
        return torch.isin(first, ords.to(device))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


def closing_cost(state: JSONPrefix) -> int:
    """Tokens the closing text may take at most: one per UTF-8 byte (byte-level BPE never needs more)."""
    return len(state.closing().encode())


def choose(
    row: torch.Tensor,
    state: JSONPrefix,
    params: SamplingParams,
    generator: torch.Generator | None,
    remaining: int,
    table: TokenTable,
) -> tuple[int, JSONPrefix] | None:
    """The token to generate next and the state after it, or None (force-close).

    row: processed logits [V] (penalties and bias applied); remaining: tokens allowed after this one.
    """
    mask = table.mask(state.first_chars(), row.device) & torch.isfinite(row)
    if params.temperature > 0:
        filtered = filter_logits(row / params.temperature, params.top_k, params.top_p)
        u = torch.rand(row.shape, generator=generator, device=row.device).clamp_(1e-20, 1.0)
        primary = torch.where(mask & torch.isfinite(filtered), filtered - torch.log(-torch.log(u)), float("-inf"))
        secondary = torch.where(mask & ~torch.isfinite(filtered), row, float("-inf"))
        orders = [primary, secondary]
    else:
        orders = [torch.where(mask, row, float("-inf"))]
    checks = 0
    for scores in orders:
        count = min(int(torch.isfinite(scores).sum()), MAX_CHECKS - checks)
        if count <= 0:
            continue
        for token in torch.topk(scores, count).indices.tolist():
            checks += 1
            nxt = _try(state, table.text[token], remaining)
            if nxt is not None:
                return token, nxt
    closing = state.closing()
    token = table.single.get(closing[:1]) if closing else None
    if token is not None and torch.isfinite(row[token]):
        nxt = _try(state, closing[0], remaining)
        if nxt is not None:
            return token, nxt
    return None


def _try(state: JSONPrefix, text: str | None, remaining: int) -> JSONPrefix | None:
    if text is None:
        return None
    nxt = state.feed(text)
    if nxt is None or closing_cost(nxt) > remaining:
        return None
    return nxt


def token_logprob(logprobs: torch.Tensor, token: int, top: int, table: TokenTable) -> TokenLogprob:
    """The OpenAI-style logprob entry of `token` from a row of log-probabilities [V]."""
    alternatives: tuple[TopLogprob, ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
        alternatives = tuple(
            TopLogprob(table.display(i), _finite(v), tuple(table.bytes[i]))
            for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        )
    return TokenLogprob(table.display(token), _finite(float(logprobs[token])), tuple(table.bytes[token]), alternatives)


def forced_logprob(token: int, table: TokenTable) -> TokenLogprob:
    """The entry of a token appended by force-closing: its probability was never computed."""
    return TokenLogprob(table.display(token), NO_LOGPROB, tuple(table.bytes[token]))


def _finite(value: float) -> float:
    return value if value > NO_LOGPROB else NO_LOGPROB
