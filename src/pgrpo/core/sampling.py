"""Group-balanced prompt sampling with a temperature alpha.

A dataset has N rows in groups; group g holds n_g rows, a share s_g = n_g / N. A draw picks group g with

    p(g) = s_g^alpha / sum_h s_h^alpha

(over the groups that have rows) and then one of its rows uniformly, so row i of group g has probability
p(g) / n_g. alpha = 1 samples the data as it is (every row 1/N); alpha = 0 samples every group equally often;
0 < alpha < 1 interpolates (the temperature of multilingual pre-training, Conneau & Lample 2019); alpha > 1
favours the large groups further.
"""

from __future__ import annotations

import math

import torch


def validate_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless alpha is a finite number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(
            f"group sampling alpha must be a finite number >= 0, got {alpha!r}: 1 samples the data as it is, "
            "0 every group equally often."
        )


def group_balanced_probabilities(group_index: torch.Tensor, alpha: float) -> torch.Tensor:
    """The probability of every row under group-balanced sampling (module docstring).

    Args:
        group_index: (N,) integer group of each row, >= 0 (indices need not be contiguous).
        alpha: temperature, finite and >= 0.
    Returns:
        (N,) float64, summing to 1.
    """
    validate_alpha(alpha)
    if group_index.ndim != 1 or not group_index.numel() or group_index.is_floating_point():
        raise ValueError(
            f"group_index must be a non-empty 1-D integer tensor (one group per row), got shape "
            f"{tuple(group_index.shape)} and dtype {group_index.dtype}."
        )
    group_index = group_index.to("cpu", torch.long)
    if group_index.min() < 0:
        raise ValueError("group_index has negative entries; give every row a group index >= 0.")
    rows_per_group = torch.bincount(group_index).to(torch.float64)
    share = rows_per_group / group_index.numel()
    # log s_g^alpha, normalized in log space: no underflow to 0/0 however large alpha is
    log_mass = torch.where(share > 0, alpha * share.log(), -math.inf)
    group_probability = torch.softmax(log_mass, 0)
    return (group_probability / rows_per_group.clamp_min(1)).index_select(0, group_index)


def sample_group_balanced(
    group_index: torch.Tensor, alpha: float, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw rows with replacement under group-balanced sampling; deterministic for a given generator state.

    Inverse-CDF sampling over the N rows (no limit on N, unlike ``torch.multinomial``'s 2^24 categories).

    Args:
        group_index: (N,) integer group of each row, >= 0.
        alpha: temperature, finite and >= 0.
        num_samples: n, how many rows to draw.
        generator: the source of randomness; it advances by n uniform draws.
    Returns:
        (n,) long row indices in [0, N).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}.")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "e.g. torch.Generator().manual_seed(seed)."
        )
    cumulative = group_balanced_probabilities(group_index, alpha).cumsum(0)
    uniform = torch.rand(num_samples, generator=generator, dtype=torch.float64) * cumulative[-1]
    return torch.searchsorted(cumulative, uniform, right=True).clamp_max(group_index.numel() - 1)
