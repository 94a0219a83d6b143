"""Stop sequences in streamed text: how much may be sent now and where a stop sequence cuts the reply.

Pure functions over the text so far, the number of characters already sent and the stop list; the engine sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopScan:
    cut: int | None  # where the first stop sequence starts: the reply ends there (None: no stop sequence yet)
    safe: int  # the text before this offset can be sent


def scan(text: str, emitted: int, stops: Sequence[str]) -> StopScan:
    """Look for a stop sequence in `text` (of which `emitted` characters were sent), from the earliest place one
    could start that was not looked at before. Without one, a tail that could still become one is held back."""
    stops = [s for s in stops if s]
    if not stops:
        return StopScan(None, len(text))
    longest = max(len(s) for s in stops)
    start = max(0, emitted - longest)
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    if hits:
        cut = min(hits)
        return StopScan(cut, cut)
    return StopScan(None, len(text) - held_back(text, stops))


def held_back(text: str, stops: Sequence[str]) -> int:
    """The length of the longest tail of `text` that is the start of a stop sequence (without being one)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def contains_stop(text: str, stops: Sequence[str]) -> bool:
    """Whether any (non-empty) stop sequence occurs in `text`."""
    return any(s and s in text for s in stops)
