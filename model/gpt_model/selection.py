"""Token selection: the next token of each request from a step's logits (batched sampling; OpenAI's penalties,
logit_bias, JSON constraints and logprobs per request), and the check of sampling parameters at submission."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence

import torch

from gpt_model import constrained
from gpt_model.json_prefix import JSONPrefix, UnsupportedSchema, compile_schema
from gpt_model.protocol import InvalidParameter, SamplingParams
from gpt_model.request import Request
from gpt_model.sampling import apply_logit_bias, apply_openai_penalties, apply_repetition_penalty, sample_rows

log = logging.getLogger("gpt_model.engine")


def check_params(params: SamplingParams, vocab: int) -> JSONPrefix | None:
    """Refuse what cannot be honoured (InvalidParameter); the start state of a JSON constraint."""
    outside = [i for i, _ in params.logit_bias if not 0 <= i < vocab]
    if outside:
        raise InvalidParameter("logit_bias", f"token id {outside[0]} is outside the vocabulary (0..{vocab - 1})")
    if params.logprobs is not None and not 0 <= params.logprobs <= 20:
        raise InvalidParameter("top_logprobs", "top_logprobs must be between 0 and 20")
    fmt = params.response_format
    if fmt is None:
        return None
    if fmt.type == "json_object":
        return JSONPrefix.start()
    try:
        return JSONPrefix.start(compile_schema(json.loads(fmt.schema or "null")))
    except (UnsupportedSchema, ValueError) as exc:
        raise InvalidParameter("response_format", f"json_schema: {exc}") from exc


def pick(
    reqs: Sequence[Request],
    logits: torch.Tensor,
    seen: torch.Tensor,
    tokens_table: Callable[[], constrained.TokenTable],
) -> list[int]:
    """The next token of each request (rows of `logits` [n, V]); -1: append the forced closing,
    -2: this request's selection failed.

    Plain requests take the batched path. Others get OpenAI's penalties and logit_bias on their
    row, a JSON constraint picks their token, and their logprob entry is kept for the engine to send.
    `tokens_table` gives the engine's token table (built on first use).
    """
    params = [r.params for r in reqs]
    generators = [r.generator for r in reqs]
    if all(p.plain for p in params):
        return sample_rows(logits, params, generators, seen).tolist()
    logits = logits.float().clone()
    if any(p.repetition_penalty != 1.0 for p in params):
        penalty = torch.tensor([p.repetition_penalty for p in params], device=logits.device)
        logits = apply_repetition_penalty(logits, seen, penalty)
    special = [i for i, p in enumerate(params) if not p.plain]
    for i in special:
        p = params[i]
        row = apply_openai_penalties(logits[i], reqs[i].generated, p.presence_penalty, p.frequency_penalty)
        logits[i] = apply_logit_bias(row, p.logit_bias)
    # rows under a constraint are picked below, without drawing from their generator here
    free = [dataclasses.replace(p, temperature=0) if reqs[i].json is not None else p for i, p in enumerate(params)]
    tokens = sample_rows(logits, free, generators).tolist()
    table = tokens_table()
    for i in special:
        try:
            tokens[i] = _pick_special(reqs[i], logits[i], tokens[i], table)
        except Exception as exc:  # this request fails alone; the batch goes on
            log.exception("token selection failed for %s", reqs[i].request_id)
            reqs[i].failure = f"{type(exc).__name__}: {exc}"
            tokens[i] = -2
    return tokens


def _pick_special(req: Request, row: torch.Tensor, token: int, table: constrained.TokenTable) -> int:
    """The constrained token (or -1: force-close) and the logprob entry of a non-plain request."""
    if req.json is not None:
        remaining = req.budget - len(req.generated) - 1
        choice = constrained.choose(row, req.json, req.params, req.generator, remaining, table)
        if choice is None:  # nothing fits: close the document now
            req.forced = table.encode(req.json.closing())[: max(1, remaining + 1)]
            token = -1
        else:
            token, req.json = choice
    if req.params.logprobs is not None:
        req.step_logprob = constrained.token_logprob(
            torch.log_softmax(row, dim=-1), token if token >= 0 else req.forced[0], req.params.logprobs, table
        )
    return token
