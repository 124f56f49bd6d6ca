"""Reductions over segments of a flat tensor (one segment per prompt or per group), without Python loops."""

from __future__ import annotations

import torch


def segment_m2(
    values: torch.Tensor, index: torch.Tensor, num_segments: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, sum of squared deviations from it (M2) and count of the finite values of every segment (two-pass).

    Args:
        values: (N,) float, NaN/inf entries are ignored.
        index: (N,) long segment of each value, in [0, num_segments).
    Returns:
        mean, m2, count: (num_segments,) each, in values' dtype; 0 where a segment has no values.
    """
    valid = torch.isfinite(values)
    all_valid = bool(valid.all())
    x = values if all_valid else torch.where(valid, values, torch.zeros_like(values))
    count = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, valid.to(values.dtype))
    mean = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, x) / count.clamp_min(1)
    deviation = x - mean.index_select(0, index)
    if not all_valid:
        deviation = torch.where(valid, deviation, torch.zeros_like(x))
    m2 = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, deviation * deviation)
    return mean, m2, count


def segment_moments(
    values: torch.Tensor, index: torch.Tensor, num_segments: int, unbiased: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std and count of the finite values of every segment (:func:`segment_m2`; ``unbiased``: divide M2 by
    n-1 instead of n). Returns (num_segments,) tensors, 0 where a segment has too few values."""
    mean, m2, count = segment_m2(values, index, num_segments)
    dof = count - 1 if unbiased else count
    std = torch.where(dof > 0, m2 / dof.clamp_min(1), torch.zeros_like(m2)).sqrt()
    return mean, std, count


def within_segment_rank(index: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every element among the elements of its segment, in order of appearance.

    Args:
        index: (M,) long, values in [0, num_segments).
    Returns:
        rank: (M,) long, 0 for the first element of each segment, 1 for the second, ...
        count: (num_segments,) long, how many elements each segment has.
    """
    count = torch.bincount(index, minlength=num_segments)
    order = torch.argsort(index, stable=True)
    starts = torch.cumsum(count, 0) - count
    rank = torch.empty_like(index)
    rank[order] = torch.arange(index.numel()) - starts[index[order]]
    return rank, count
