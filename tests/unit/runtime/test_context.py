from __future__ import annotations

import pytest
from gpt_model.protocol import ChatMessage, ContextTooLong
from gpt_runtime.services.context import fit_context

pytestmark = pytest.mark.unit


def count(messages):
    """Ten tokens a message."""
    return 10 * len(messages)


def turns(n):
    return [ChatMessage("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(n)]


def test_everything_fits_and_the_budget_is_kept():
    messages = turns(5)
    kept, budget = fit_context(messages, count, window=100, wanted_new_tokens=20)
    assert kept == messages and budget == 20


def test_oldest_turns_go_first_and_the_system_prompt_stays():
    messages = [ChatMessage("system", "be brief"), *turns(9)]
    kept, budget = fit_context(messages, count, window=60, wanted_new_tokens=20)
    assert kept[0].role == "system"
    assert kept[-1] == messages[-1]
    assert count(kept) + budget <= 60
    assert [m.content for m in kept[1:]] == ["m6", "m7", "m8"]
    assert budget == 20


def test_history_never_starts_with_an_orphaned_assistant_turn():
    kept, _ = fit_context([*turns(6), ChatMessage("user", "last")], count, window=50, wanted_new_tokens=10)
    assert kept[0].role == "user"


def test_budget_shrinks_when_the_last_message_alone_is_large():
    kept, budget = fit_context(turns(3), lambda ms: 95 if len(ms) == 1 else 200, window=100, wanted_new_tokens=50)
    assert kept == turns(3)[-1:]
    assert budget == 5


def test_no_room_for_a_single_token_raises():
    with pytest.raises(ContextTooLong, match="context window is 100"):
        fit_context(turns(1), lambda ms: 100, window=100, wanted_new_tokens=10)
