"""Per-group metrics of one batch: what the trainer logs as ``group/...`` (pure: no TRL)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from pgrpo.core.labels import Label
from pgrpo.core.segments import segment_moments
from pgrpo.core.stats import GroupRewardTracker


def group_metrics(
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    groups: Sequence[Label],
    tracker: GroupRewardTracker,
    unbiased_history_std: bool = False,
    loss_weights: torch.Tensor | None = None,
    max_logged_groups: int = 32,
) -> dict[str, float]:
    """Per-group reward, advantage and history statistics of a batch (the groups it drew; the worst group over
    training is :mod:`pgrpo.core.curves`', whose groups need not be in the batch).

    Args:
        rewards: (N,) float, NaN where a reward is missing (ignored, as by the estimators).
        advantages: (N,) float.
        groups: N labels; a label ``tracker`` has not seen is reported as ``"unseen"`` (without history).
        tracker: the group statistics after this batch (history mean, std, count per group).
        loss_weights: (tracker.num_groups,) per-group loss weights, or None when no weighting is used.
        max_logged_groups: per-group entries only while the tracker holds at most this many groups.
    Returns:
        ``group/num_groups`` = tracker.num_groups, and for each group present in the batch, in order of first
        appearance in the tracker, ``group/<label>/{reward,advantage}_{mean,std}`` (population std over the batch;
        the reward's are NaN when the group has no finite reward), ``group/<label>/nonfinite_rewards`` (how many of
        its rewards were NaN, None or +-inf: left out of every statistic) and
        ``group/<label>/history_{mean,std,count}`` (+ ``loss_weight``).
    """
    group_index = tracker.encode(groups, add=False)
    present, batch_index = torch.unique(group_index, return_inverse=True)
    num_present = len(present)
    reward_mean, reward_std, reward_count = segment_moments(rewards, batch_index, num_present)
    advantage_mean, advantage_std, _ = segment_moments(advantages, batch_index, num_present)
    metrics = {"group/num_groups": float(tracker.num_groups)}
    if tracker.num_groups > max_logged_groups:
        return metrics
    history_std = tracker.std(unbiased_history_std)
    batch_count = torch.bincount(batch_index, minlength=num_present).to(reward_count.dtype)
    for i, index in enumerate(present.tolist()):
        prefix = f"group/{tracker.labels[index] if index >= 0 else 'unseen'}"
        scored = reward_count[i].item() > 0  # a group whose rewards are all missing has no mean: NaN, not 0
        metrics[f"{prefix}/reward_mean"] = reward_mean[i].item() if scored else math.nan
        metrics[f"{prefix}/reward_std"] = reward_std[i].item() if scored else math.nan
        metrics[f"{prefix}/advantage_mean"] = advantage_mean[i].item()
        metrics[f"{prefix}/advantage_std"] = advantage_std[i].item()
        metrics[f"{prefix}/nonfinite_rewards"] = (batch_count[i] - reward_count[i]).item()
        if index >= 0:
            metrics[f"{prefix}/history_mean"] = tracker.mean[index].item()
            metrics[f"{prefix}/history_std"] = history_std[index].item()
            metrics[f"{prefix}/history_count"] = tracker.count[index].item()
            if loss_weights is not None:
                metrics[f"{prefix}/loss_weight"] = loss_weights[index].item()
    return metrics


def nonfinite_counts(rewards: torch.Tensor, groups: Sequence[Label]) -> Counter:
    """{label: how many of its rewards are not finite} for the labels with at least one; rewards (N,), NaN where a
    reward function gave None."""
    bad = (~torch.isfinite(rewards)).tolist()
    return Counter(label for label, missing in zip(groups, bad, strict=True) if missing)
