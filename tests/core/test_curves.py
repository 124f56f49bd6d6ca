"""Running per-group rewards (the training curves and the worst group) against a plain-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgrpo.core import RunningGroupRewards
from pgrpo.core.curves import WORST_RUNNING


def running_reference(batches: list[tuple[np.ndarray, list]], window: int) -> dict:
    """For each label: the batch means of its finite rewards, one per batch that has any, and the last ``window`` of
    them averaged. Written with lists, independent of the segment reductions."""
    history: dict = {}
    for rewards, groups in batches:
        for label in dict.fromkeys(groups):
            history.setdefault(label, [])
            finite = [r for r, g in zip(rewards, groups, strict=True) if g == label and math.isfinite(r)]
            if finite:
                history[label].append(sum(finite) / len(finite))
    return {label: sum(means[-window:]) / len(means[-window:]) for label, means in history.items() if means}


@pytest.mark.parametrize("window", [1, 3, 5])
def test_running_rewards_match_the_reference_with_a_rare_group(window: int) -> None:
    rng = np.random.default_rng(0)
    running = RunningGroupRewards(window)
    batches, carried = [], 0
    for step in range(40):
        # "rare" (4% of the prompts) is absent from most batches and scores far lower; 7 (an int label) often has no
        # finite reward
        groups = rng.choice(["big", "mid", "rare", 7], size=8, p=[0.6, 0.3, 0.04, 0.06]).tolist()
        groups = [int(g) if g == "7" else g for g in groups]
        rewards = rng.normal(size=8) + np.array([-5.0 if g == "rare" else 0.0 for g in groups])
        rewards[[i for i, g in enumerate(groups) if g == 7 and step % 2]] = np.nan
        batches.append((rewards, groups))
        running.update(torch.tensor(rewards), groups)
        expected = running_reference(batches, window)
        got = running.metrics()
        assert running.values() == pytest.approx(expected, rel=1e-12)
        assert list(running.values()) == list(expected)  # first-seen order
        assert got[WORST_RUNNING] == pytest.approx(min(expected.values()), rel=1e-12)
        assert {k: v for k, v in got.items() if k != WORST_RUNNING} == pytest.approx(
            {f"group/{label}/reward_running": value for label, value in expected.items()}, rel=1e-12
        )
        if "rare" in expected:  # the worst group from its first batch on, drawn or not
            assert got[WORST_RUNNING] == pytest.approx(expected["rare"], rel=1e-12)
            carried += "rare" not in groups
    assert carried > 20  # the steps where a minimum over the drawn groups would have shown another group


def test_the_worst_group_is_carried_while_absent_not_the_worst_of_the_drawn_groups() -> None:
    running = RunningGroupRewards(window=2)
    running.update(torch.tensor([0.9, 0.1, 0.8]), ["big", "small", "big"])
    running.update(torch.tensor([0.7, 0.5]), ["big", "big"])  # "small" not drawn: its 0.1 is carried
    assert running.metrics() == {
        WORST_RUNNING: pytest.approx(0.1),
        "group/big/reward_running": pytest.approx((0.85 + 0.6) / 2),
        "group/small/reward_running": pytest.approx(0.1),
    }
    running.update(torch.tensor([0.3, 0.6, 1.0]), ["small", "big", "big"])
    running.update(torch.tensor([float("nan"), 0.4]), ["small", "big"])  # no finite reward: "small" unchanged
    assert running.values() == pytest.approx({"big": (0.8 + 0.4) / 2, "small": (0.1 + 0.3) / 2})


def test_no_finite_reward_yet_gives_no_worst_group_and_many_groups_only_the_worst() -> None:
    running = RunningGroupRewards()
    running.update(torch.tensor([float("nan")] * 2), ["a", "b"])
    assert running.metrics() == {}
    running.update(torch.tensor([1.0, 2.0, 3.0]), ["a", "b", "c"])
    assert running.metrics(max_logged_groups=2) == {WORST_RUNNING: 1.0}


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_bad_windows_are_refused(window: object) -> None:
    with pytest.raises(ValueError, match="window"):
        RunningGroupRewards(window)  # type: ignore[arg-type]
