import pytest
import torch
from gpt_model.protocol import SamplingParams
from gpt_model.sampling import apply_repetition_penalty, filter_logits, make_generator, sample_rows

pytestmark = pytest.mark.unit


def test_top_k_keeps_exactly_the_k_best():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus_and_always_the_top_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [[True, False, False, False]]


def test_repetition_penalty_lowers_seen_tokens_either_sign():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -4.0, 2.0]]


def test_greedy_rows_take_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    out = sample_rows(logits, [SamplingParams(temperature=0)] * 2, [None, None])
    assert out.tolist() == [1, 0]


def test_seeded_sampling_is_deterministic_and_seeds_differ():
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=1.0, seed=42)]

    def draw(seed):
        gen = make_generator(seed, "cpu")
        return [int(sample_rows(logits, params, [gen])[0]) for _ in range(20)]

    assert draw(42) == draw(42)
    assert draw(42) != draw(43)


def test_rows_sample_independently_with_their_own_settings():
    logits = torch.zeros(2, 50)
    logits[:, 7] = 3.0
    params = [SamplingParams(temperature=1.0, top_k=1), SamplingParams(temperature=5.0, seed=1)]
    gens = [make_generator(0, "cpu"), make_generator(1, "cpu")]
    first = {int(sample_rows(logits, params, gens)[0]) for _ in range(30)}
    assert first == {7}  # top_k=1 is greedy
    second = {int(sample_rows(logits, params, gens)[1]) for _ in range(30)}
    assert len(second) > 5  # a hot temperature spreads out
