"""Inverse-CDF token draws (pgrpo.models.token_sampling) sample the distribution torch.multinomial samples."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from transformers import AutoModelForCausalLM

import pgrpo.models.token_sampling as token_sampling
from pgrpo.models.token_sampling import inverse_cdf_multinomial, inverse_cdf_sample

# unnormalized weights with zeros at the start, in the middle and at the end of a row
WEIGHTS = torch.tensor([
    [0.0, 0.0, 3.0, 1.0, 0.0, 6.0, 0.5, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [1e-6, 5.0, 0.0, 2.0, 2.0, 0.0, 1.0, 0.0],
])  # fmt: skip


def frequencies(draws: torch.Tensor, rows: int, vocab: int) -> torch.Tensor:
    """(rows, vocab) counts of ``draws`` ((repeats * rows, 1) indices, the rows cycling)."""
    counts = torch.zeros(rows, vocab)
    row = torch.arange(len(draws)) % rows
    counts.index_put_((row, draws[:, 0]), torch.ones(len(draws)), accumulate=True)
    return counts


def assert_follows(counts: torch.Tensor, weights: torch.Tensor) -> None:
    """Each row's counts: none where the weight is 0, and a chi-square test against the weights that passes."""
    assert not counts[weights == 0].any()
    for observed, weight in zip(counts, weights, strict=True):
        support = weight > 0
        expected = weight[support].double() / weight.sum() * observed.sum()
        if support.sum() > 1:
            assert stats.chisquare(observed[support].double().numpy(), expected.numpy()).pvalue > 1e-4


def test_draws_follow_the_weights_and_never_a_zero_weight() -> None:
    repeats = 20_000
    draws = inverse_cdf_sample(WEIGHTS.repeat(repeats, 1), torch.Generator().manual_seed(0))
    assert draws.shape == (repeats * len(WEIGHTS), 1) and draws.dtype == torch.long
    assert_follows(frequencies(draws, len(WEIGHTS), WEIGHTS.shape[1]), WEIGHTS)


@pytest.mark.parametrize(("uniform", "expected"), [(0.0, [2, 0, 0, 0]), (1.0 - 2.0**-53, [6, 7, 0, 6])])
def test_the_extreme_uniforms_draw_the_first_and_last_positive_entries(
    monkeypatch: pytest.MonkeyPatch, uniform: float, expected: list[int]
) -> None:
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.full(shape, uniform, dtype=kwargs["dtype"]))
    assert inverse_cdf_sample(WEIGHTS)[:, 0].tolist() == expected


def test_multinomial_is_inverse_cdf_within_the_block_and_torch_outside() -> None:
    original = torch.multinomial
    probs = WEIGHTS / WEIGHTS.sum(-1, keepdim=True)
    with inverse_cdf_multinomial():
        assert torch.multinomial is not original
        torch.manual_seed(3)
        drawn = torch.multinomial(probs, num_samples=1)
        # not covered: several draws, a 1-D input -> torch's own, the same draws as outside the block
        torch.manual_seed(4)
        several, one_row = torch.multinomial(probs, 2), torch.multinomial(probs[1], 1)
        with pytest.raises(RuntimeError):  # invalid probabilities still get torch's error
            torch.multinomial(torch.tensor([[0.5, float("nan")]]), 1)
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.zeros(2, 3), 1)
    assert torch.multinomial is original
    torch.manual_seed(3)
    assert torch.equal(drawn, inverse_cdf_sample(probs))
    torch.manual_seed(4)
    assert torch.equal(several, torch.multinomial(probs, 2)) and torch.equal(one_row, torch.multinomial(probs[1], 1))


def test_generate_samples_the_models_next_token_distribution(
    toy_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``generate`` within the block draws its tokens by inverse CDF, from the model's own softmax (an independent
    forward pass gives the expected frequencies)."""
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    calls = []
    draw = token_sampling.draw_from_cdf
    monkeypatch.setattr(token_sampling, "draw_from_cdf", lambda cdf, g=None: calls.append(1) or draw(cdf, g))
    prompts = torch.tensor([[3, 4, 5], [6, 7, 8]])
    with torch.no_grad():
        probs = torch.softmax(model(prompts).logits[:, -1].double(), -1)
        repeats = 4_000
        torch.manual_seed(0)
        with inverse_cdf_multinomial():
            out = model.generate(
                prompts.repeat(repeats, 1), max_new_tokens=1, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                pad_token_id=0, eos_token_id=None,
            )  # fmt: skip
    assert calls == [1]
    assert_follows(frequencies(out[:, -1:], len(prompts), probs.shape[1]), probs)
