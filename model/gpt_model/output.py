"""From sampled tokens to what a stream sees: text deltas (with their logprobs) and the reason a request finishes.

Pure Python (no torch): the engine hands each accepted token here and sends what comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from gpt_model import stops
from gpt_model.protocol import TextDelta, TokenLogprob
from gpt_model.request import Request


class HasEos(Protocol):
    @property
    def eos_token_ids(self) -> Collection[int]: ...


@dataclass
class Output:
    deltas: list[TextDelta] = field(default_factory=list)  # to send, in order
    finish: str | None = None  # "stop" or "length" when the request is done
    tokens: int = 0  # tokens generated (an end-of-turn token included)


class OutputProcessor:
    """Appends tokens to a request's reply, streams what is safe to stream and says when it is done.

    `tokenizer.eos_token_ids` is read at each token; `forced_logprob` gives the logprob entry of a closing token
    a JSON constraint forces (the model is not run for them); `context_window` ends a request at its end."""

    def __init__(self, tokenizer: HasEos, context_window: int, forced_logprob: Callable[[int], TokenLogprob]):
        self.tokenizer, self.context_window, self.forced_logprob = tokenizer, context_window, forced_logprob

    def accept(self, req: Request, token: int) -> Output:
        """A sampled token (-1: the constraint's closing tokens, in req.forced)."""
        out = Output()
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
        if token < 0:
            return self._accept_forced(req, out)
        req.generated.append(token)
        out.tokens += 1
        if token in self.tokenizer.eos_token_ids and req.json is None:
            req.generated.pop()  # the stop token is not part of the reply
            return self._flush(req, out, "stop")
        self._append_text(req, token)
        if self._check_stop(req, out):
            out.finish = "stop"
        elif req.json is not None and req.json.done:  # the document is complete: nothing may follow
            self._flush(req, out, "stop")
        elif len(req.generated) >= req.budget or req.position >= self.context_window:
            self._flush(req, out, "length")
        return out

    def _accept_forced(self, req: Request, out: Output) -> Output:
        """Append the constraint's closing tokens and finish."""
        for i, token in enumerate(req.forced):
            if i and req.params.logprobs is not None:
                req.step_logprob = self.forced_logprob(token)
            req.generated.append(token)
            out.tokens += 1
            self._append_text(req, token)
        if self._check_stop(req, out):
            out.finish = "stop"
            return out
        return self._flush(req, out, "length" if len(req.generated) >= req.budget else "stop")

    @staticmethod
    def _append_text(req: Request, token: int) -> None:
        if req.step_logprob is not None:
            req.logprobs.append((len(req.text), req.step_logprob))
            req.step_logprob = None
        assert req.decoder is not None  # set at submission
        req.text += req.decoder.push(token)

    @staticmethod
    def _take_logprobs(req: Request, upto: int) -> tuple[TokenLogprob, ...]:
        """The entries of tokens whose text starts before character `upto` and was not sent yet."""
        taken = []
        while req.logprobs and req.logprobs[0][0] < upto:
            taken.append(req.logprobs.popleft()[1])
        return tuple(taken)

    def _check_stop(self, req: Request, out: Output) -> bool:
        """Stream what is safe to stream; True when a stop sequence was found (text cut before it)."""
        found = stops.scan(req.text, req.emitted, req.params.stop)
        if found.safe > req.emitted:
            out.deltas.append(TextDelta(req.text[req.emitted : found.safe], self._take_logprobs(req, found.safe)))
            req.emitted = found.safe
        if found.cut is None:
            return False
        req.emitted = len(req.text)
        return True

    def _flush(self, req: Request, out: Output, reason: str) -> Output:
        """The decoder's held-back bytes and the rest of the text (unless a stop sequence is in it); then done."""
        assert req.decoder is not None  # set at submission
        req.text += req.decoder.flush()
        if len(req.text) > req.emitted and not stops.contains_stop(req.text, req.params.stop):
            out.deltas.append(TextDelta(req.text[req.emitted :], self._take_logprobs(req, len(req.text))))
            req.emitted = len(req.text)
        out.finish = reason
        return out
