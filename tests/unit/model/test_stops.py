"""Stop sequences over streamed text: what may be sent now, and where a stop sequence cuts the reply."""

import pytest
from gpt_model.stops import StopScan, contains_stop, held_back, scan

pytestmark = pytest.mark.unit


def test_without_stop_sequences_everything_is_safe():
    assert scan("hello", 2, ()) == StopScan(None, 5)
    assert scan("hello", 0, ("",)) == StopScan(None, 5)  # an empty stop sequence is none


def test_a_stop_sequence_cuts_the_text_before_it():
    assert scan("one two END three", 0, ("END",)) == StopScan(8, 8)
    assert scan("aXbY", 0, ("Y", "X")) == StopScan(1, 1)  # the earliest of several


def test_a_tail_that_could_become_a_stop_sequence_is_held_back():
    assert scan("the answer is <|en", 0, ("<|end|>",)) == StopScan(None, len("the answer is "))
    assert held_back("abc", ("cde", "bcx")) == 2  # the longest partial match wins
    assert held_back("abc", ("xyz",)) == 0


def test_a_stop_sequence_split_across_what_was_sent_and_what_is_new_is_found():
    text = "hello wor" + "ld!"
    first = scan("hello wor", 0, ("world",))
    assert first.cut is None and first.safe == len("hello ")
    assert scan(text, first.safe, ("world",)) == StopScan(6, 6)


def test_only_text_near_what_was_sent_is_searched_again():
    # a stop sequence wholly inside text already sent (longer ago than the longest stop) is not found twice
    assert scan("STOP and a long tail after it", 20, ("STOP",)).cut is None


def test_contains_stop():
    assert contains_stop("a STOP b", ("", "STOP"))
    assert not contains_stop("a b", ("", "STOP"))
