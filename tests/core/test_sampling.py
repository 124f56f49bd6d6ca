"""Group-balanced sampling against a direct NumPy reference, and its draws against their probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgrpo.core import group_balanced_probabilities, sample_group_balanced
from tests.core.reference import sampling_reference

# 4 groups with shares 0.7 / 0.2 / 0.08 / 0.02 of 100 rows; indices not contiguous (1, 2, 5 have no rows), shuffled
GROUPS = torch.from_numpy(np.random.default_rng(0).permutation(np.repeat([0, 3, 4, 6], [70, 20, 8, 2])))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0, 2.0])
def test_probabilities_match_the_reference(alpha: float) -> None:
    probabilities = group_balanced_probabilities(GROUPS, alpha)
    expected = sampling_reference(GROUPS.numpy(), alpha)
    np.testing.assert_allclose(probabilities.numpy(), expected, rtol=1e-12)
    assert probabilities.dtype == torch.float64 and probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_alpha_one_is_the_data_and_alpha_zero_balances_the_groups() -> None:
    np.testing.assert_allclose(group_balanced_probabilities(GROUPS, 1.0).numpy(), 1 / 100, rtol=1e-12)
    balanced = group_balanced_probabilities(GROUPS, 0.0)
    per_group = torch.zeros(7, dtype=torch.float64).index_add_(0, GROUPS, balanced)
    np.testing.assert_allclose(per_group.numpy(), [0.25, 0, 0, 0.25, 0.25, 0, 0.25], rtol=1e-12)


def test_a_huge_alpha_puts_everything_on_the_largest_group_without_nan() -> None:
    probabilities = group_balanced_probabilities(GROUPS, 1e4)  # 0.7 ** 1e4 underflows to 0 outside log space
    assert torch.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[GROUPS == 0].numpy(), 1 / 70, rtol=1e-12)
    assert probabilities[GROUPS != 0].max().item() < 1e-300


def test_draw_frequencies_match_the_intended_probabilities() -> None:
    alpha, n = 0.5, 200_000
    rows = sample_group_balanced(GROUPS, alpha, n, torch.Generator().manual_seed(0))
    assert rows.shape == (n,) and rows.dtype == torch.long and rows.min() >= 0 and rows.max() < len(GROUPS)
    expected_row = sampling_reference(GROUPS.numpy(), alpha)
    # A frequency over n independent draws has sd sqrt(p (1 - p) / n), at most 0.0012 here. Five sd: a correct
    # sampler passes all 100 row and 4 group checks with probability > 1 - 104 * 6e-7, while one that ignores alpha
    # (the 2% group drawn 2% of the time instead of 8.3%) misses by about 100 sd.
    row_frequency = np.bincount(rows.numpy(), minlength=len(GROUPS)) / n
    row_sd = np.sqrt(expected_row * (1 - expected_row) / n)
    assert np.all(np.abs(row_frequency - expected_row) < 5 * row_sd)
    group_of = GROUPS.numpy()
    for g in (0, 3, 4, 6):
        p = expected_row[group_of == g].sum()
        assert abs(row_frequency[group_of == g].sum() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_the_draw_is_deterministic_for_a_generator_state() -> None:
    first = sample_group_balanced(GROUPS, 0.5, 1000, torch.Generator().manual_seed(7))
    again = sample_group_balanced(GROUPS, 0.5, 1000, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(7)
    sample_group_balanced(GROUPS, 0.5, 1000, generator)
    assert not torch.equal(sample_group_balanced(GROUPS, 0.5, 1000, generator), first)  # the state advanced
    assert not torch.equal(sample_group_balanced(GROUPS, 0.5, 1000, torch.Generator().manual_seed(8)), first)
    assert sample_group_balanced(GROUPS, 0.5, 0, generator).shape == (0,)


@pytest.mark.parametrize("alpha", [-0.5, math.nan, math.inf, "1", True, None])
def test_bad_alpha_is_refused(alpha) -> None:
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        group_balanced_probabilities(GROUPS, alpha)


@pytest.mark.parametrize(
    ("group_index", "message"),
    [
        (torch.tensor([], dtype=torch.long), "non-empty 1-D integer"),
        (torch.zeros(2, 3, dtype=torch.long), "non-empty 1-D integer"),
        (torch.tensor([0.0, 1.0]), "non-empty 1-D integer"),
        (torch.tensor([0, -1]), "negative"),
    ],
)
def test_bad_group_index_is_refused(group_index: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_balanced_probabilities(group_index, 1.0)


def test_bad_draw_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        sample_group_balanced(GROUPS, 1.0, -1, torch.Generator())
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        sample_group_balanced(GROUPS, 1.0, 10, 0)
