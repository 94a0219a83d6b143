"""One generation inside the engine: its tokens, text, where it sits, and its status. Pure Python (no torch)."""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpt_model.protocol import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from gpt_model.json_prefix import JSONPrefix
    from gpt_model.tokenizer import StreamDecoder


class RequestStatus(enum.Enum):
    """Where a request is. Any FINISHED_* status is final: the worker stops touching the request and frees its
    slot before its next step (the loop thread may set FINISHED_CANCELLED at any time)."""

    WAITING = "waiting"
    PREFILLING = "prefilling"  # its prompt goes in in chunks, at a slot beyond the running ones
    RUNNING = "running"  # decoding, at slot == its index among the running requests
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_CANCELLED = "cancelled"
    FINISHED_ERROR = "error"

    @property
    def finished(self) -> bool:
        return self.name.startswith("FINISHED_")

    @classmethod
    def finished_with(cls, reason: str) -> RequestStatus:
        """The final status of a finish reason ("stop", "length", "cancelled", "error")."""
        return cls(reason)


@dataclass(eq=False)
class Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    budget: int  # max completion tokens
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    submitted: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    closed: bool = False  # a Finished was delivered to the stream (loop thread only): later events are dropped
    generated: list[int] = field(default_factory=list)
    prefilled: int = 0  # prompt tokens already in the cache
    text: str = ""
    emitted: int = 0  # chars of text already streamed
    decoder: StreamDecoder | None = None
    generator: Any = None  # a torch.Generator when it samples (temperature > 0)
    slot: int = -1
    hit: list = field(default_factory=list)  # prefix cache blocks found at admission, loaded into the slot
    first_token_at: float | None = None
    failure: str | None = None  # why its token selection failed (it then finishes with "error")
    json: JSONPrefix | None = None  # the output so far, under a response_format constraint
    forced: list[int] = field(default_factory=list)  # the closing tokens when the constraint force-closes
    step_logprob: TokenLogprob | None = None  # the logprob entry of the token being accepted
    logprobs: collections.deque = field(default_factory=collections.deque)  # (text offset, entry) not yet sent

    @property
    def finished(self) -> bool:
        return self.status.finished

    def finish(self, reason: str) -> None:
        """Mark it finished with `reason` (a status set first, e.g. a cancel from the loop thread, stays)."""
        if not self.status.finished:
            self.status = RequestStatus.finished_with(reason)

    @property
    def need(self) -> int:
        """The most tokens this request can hold in the KV cache."""
        return len(self.prompt) + self.budget

    @property
    def position(self) -> int:
        """Tokens in the cache: the next token's position."""
        return len(self.prompt) + len(self.generated) - 1
