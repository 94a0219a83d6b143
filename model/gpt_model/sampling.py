"""Token selection: repetition penalty, temperature, top-k, top-p, greedy, seeded sampling.

The order matches Hugging Face's logits processors: repetition penalty, then temperature,
then top-k, then top-p.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gpt_model.protocol import SamplingParams


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty: seen tokens' logits divided (positive) or multiplied (negative).

    logits [n, V] float, seen [n, V] bool, penalty [n] float (1.0 = none).
    """
    pen = penalty[:, None].to(logits.dtype)
    penalised = torch.where(logits > 0, logits / pen, logits * pen)
    return torch.where(seen, penalised, logits)


def apply_openai_penalties(
    row: torch.Tensor, generated: Sequence[int], presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI's penalties on one row [V]: minus frequency x count and presence x (count > 0) of each
    token generated so far."""
    if not generated or not (presence or frequency):
        return row
    counts = torch.bincount(torch.tensor(list(generated), device=row.device), minlength=row.shape[-1])
    counts = counts[: row.shape[-1]].to(row.dtype)
    return row - frequency * counts - presence * (counts > 0).to(row.dtype)


def apply_logit_bias(row: torch.Tensor, bias: Sequence[tuple[int, float]]) -> torch.Tensor:
    """Add a bias to some tokens' logits in one row [V]; a bias of -100 or less bans the token."""
    if not bias:
        return row
    ids = torch.tensor([i for i, _ in bias], device=row.device)
    values = torch.tensor([b for _, b in bias], device=row.device, dtype=row.dtype)
    row = row.index_add(0, ids, values)
    banned = ids[values <= -100]
    if banned.numel():
        row = row.index_fill(0, banned, float("-inf"))
    return row


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside top-k / the top-p nucleus to -inf. logits [..., V]."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_batch(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row with the same settings for every row. logits [n, V] -> [n]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator)[:, 0]


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row, each row with its own settings and generator. logits [n, V] -> [n] (cpu)."""
    logits = logits.float()
    if seen is not None and any(p.repetition_penalty != 1.0 for p in params):
        penalty = torch.tensor([p.repetition_penalty for p in params], device=logits.device)
        logits = apply_repetition_penalty(logits, seen, penalty)
    out = logits.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled:
        out = out.clone()
        for i in sampled:
            p = params[i]
            row = filter_logits(logits[i] / p.temperature, p.top_k, p.top_p)
            out[i] = torch.multinomial(row.softmax(dim=-1), 1, generator=generators[i])[0]
    return out.cpu()


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
