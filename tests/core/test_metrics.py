"""Per-group batch metrics (what the trainer logs as ``group/...``) against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgrpo.core import GroupRewardTracker, group_metrics


def metrics_reference(
    rewards: np.ndarray,
    advantages: np.ndarray,
    groups: list,
    history: dict,
    weights: dict | None,
    num_groups: int,
    ddof: int,
) -> dict[str, float]:
    """Group by label with plain NumPy: batch moments over finite rewards, history from every reward seen so far."""
    reference: dict[str, float] = {}
    for label in dict.fromkeys(groups):
        rows = np.array([g == label for g in groups])
        batch = rewards[rows][np.isfinite(rewards[rows])]
        name = f"group/{label if label in history else 'unseen'}"
        reference[f"{name}/reward_mean"] = batch.mean() if batch.size else np.nan  # no mean, not 0
        reference[f"{name}/reward_std"] = batch.std() if batch.size else np.nan
        reference[f"{name}/advantage_mean"] = advantages[rows].mean()
        reference[f"{name}/advantage_std"] = advantages[rows].std()
        reference[f"{name}/nonfinite_rewards"] = float(rows.sum() - batch.size)
        if label in history:
            seen = np.array(history[label])
            reference[f"{name}/history_mean"] = seen.mean()
            reference[f"{name}/history_std"] = seen.std(ddof=ddof) if seen.size > ddof else 0.0
            reference[f"{name}/history_count"] = float(seen.size)
            if weights is not None:
                reference[f"{name}/loss_weight"] = weights[label]
    reference["group/num_groups"] = float(num_groups)
    return reference


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_group_metrics_match_the_numpy_reference(unbiased: bool, with_weights: bool) -> None:
    rng = np.random.default_rng(3)
    tracker = GroupRewardTracker()
    history: dict = {}
    for _ in range(3):  # a few batches of history, with missing (NaN) rewards
        labels = rng.choice(["a", "b", 7], size=12).tolist()
        labels = [int(g) if g == "7" else g for g in labels]
        values = rng.normal(size=12)
        values[rng.random(12) < 0.2] = np.nan
        tracker.update(torch.tensor(values), tracker.encode(labels))
        for g, v in zip(labels, values, strict=True):
            if np.isfinite(v):
                history.setdefault(g, []).append(v)
    groups = ["b", "new", 7, "b", "a", "new", 7, 7, "b", "a"]  # "new" was never seen: no history
    rewards = rng.normal(size=len(groups))
    rewards[[0, 4, 9]] = np.nan  # every reward of "a" missing: its batch mean is reported as 0
    advantages = rng.normal(size=len(groups))
    weights = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64) if with_weights else None
    got = group_metrics(
        torch.tensor(rewards), torch.tensor(advantages), groups, tracker, unbiased, weights, max_logged_groups=3
    )
    by_label = None if weights is None else dict(zip(tracker.labels, weights.tolist(), strict=True))
    expected = metrics_reference(rewards, advantages, groups, history, by_label, tracker.num_groups, int(unbiased))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name
    assert got["group/a/nonfinite_rewards"] == 2 and np.isnan(got["group/a/reward_mean"])


def test_many_groups_log_only_the_summary() -> None:
    tracker = GroupRewardTracker()
    groups = ["a", "b", "c"]
    tracker.update(torch.tensor([1.0, 2.0, 3.0]), tracker.encode(groups))
    got = group_metrics(torch.tensor([1.0, 0.5, 3.0]), torch.zeros(3), groups, tracker, max_logged_groups=2)
    assert got == {"group/num_groups": 3.0}
