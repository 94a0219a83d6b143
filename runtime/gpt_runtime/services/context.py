"""Fitting a conversation into the model's context window (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpt_model.protocol import ChatMessage, ContextTooLong


def fit_context(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    window: int,
    wanted_new_tokens: int,
) -> tuple[list[ChatMessage], int]:
    """Drop the oldest turns until the prompt leaves room for the reply.

    Leading system messages and the last message are always kept. Returns the kept
    messages and the reply budget (wanted_new_tokens, clipped to the room left).
    Raises ContextTooLong when even the kept minimum leaves no room for one token.
    """
    messages = list(messages)
    if not messages:
        raise ValueError("no messages to fit")
    head = 0
    while head < len(messages) - 1 and messages[head].role == "system":
        head += 1
    system, middle, last = messages[:head], messages[head:-1], messages[-1:]
    prompt_tokens = count_tokens(system + middle + last)
    while middle and prompt_tokens + wanted_new_tokens > window:
        middle = middle[1:]
        # Never start the history with an assistant turn that lost its question.
        while middle and middle[0].role == "assistant":
            middle = middle[1:]
        prompt_tokens = count_tokens(system + middle + last)
    room = window - prompt_tokens
    if room < 1:
        raise ContextTooLong(f"the prompt takes {prompt_tokens} tokens; the model's context window is {window}")
    return system + middle + last, min(wanted_new_tokens, room)
