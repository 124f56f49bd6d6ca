"""Every estimator and the engine against direct NumPy float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrpo.core import (
    ESTIMATORS,
    AdvantageBatch,
    AdvantageEngine,
    EngineOptions,
    GroupRewardTracker,
    get_estimator,
    prompt_moments,
    register_estimator,
)
from tests.core.reference import advantage_reference, history_reference

EPS = 1e-4


@st.composite
def grouped_batch(draw):
    """Uneven prompt groups (singletons included), NaN rewards, 1-4 preference groups, big offsets."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=8))
    prompt_index = np.repeat(np.arange(len(sizes)), sizes)
    n = len(prompt_index)
    prompt_group = draw(st.lists(st.sampled_from(["x", "y", 7, 8]), min_size=len(sizes), max_size=len(sizes)))
    offset = draw(st.sampled_from([0.0, 1e6]))
    rewards = np.array(draw(st.lists(st.one_of(st.floats(-5, 5), st.just(math.nan)), min_size=n, max_size=n)))
    return rewards + offset, prompt_index, [prompt_group[p] for p in prompt_index]


def tolerance(rewards: np.ndarray) -> float:
    finite = rewards[np.isfinite(rewards)]
    return 1e-12 * max(1.0, np.abs(finite).max() if len(finite) else 1.0)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@settings(max_examples=60, deadline=None)
@given(batch=grouped_batch(), min_count=st.integers(1, 5))
def test_estimator_matches_numpy_reference(name: str, batch, min_count: int) -> None:
    rewards, prompt_index, groups = batch
    engine = AdvantageEngine(estimator=name, min_count=min_count)
    advantages = engine(torch.tensor(rewards), torch.tensor(prompt_index), groups).numpy()

    history = history_reference(rewards, groups, "cumulative")
    history_mean = np.array([history[g][1] for g in groups])
    history_std = np.array([history[g][2] for g in groups])
    ready = np.array([history[g][0] >= min_count for g in groups])
    expected = advantage_reference(name, rewards, prompt_index, history_mean, history_std, ready, EPS)
    # rounding of a mean at offset 1e6 (~1e-10) is amplified by 1/eps when a prompt's rewards are all equal
    np.testing.assert_allclose(advantages, expected, rtol=1e-6, atol=tolerance(rewards) / EPS)
    assert np.all(advantages[~np.isfinite(rewards)] == 0.0)


@settings(max_examples=40, deadline=None)
@given(batch=grouped_batch())
def test_pgrpo_decomposes_into_scaled_grpo_plus_shift(batch) -> None:
    """Corollary 3.1 with eps = 0: A_P = (sigma_G / sigma_p) A_GRPO + (mu_G - mu_p) / sigma_p."""
    rewards, prompt_index, groups = batch
    rewards = np.where(np.isfinite(rewards), rewards, 0.0) + np.arange(len(rewards)) * 0.37  # distinct, finite
    engine = AdvantageEngine(estimator="pgrpo", eps=0.0, min_count=1)
    p = torch.tensor(prompt_index)
    personalized = engine(torch.tensor(rewards), p, groups).numpy()
    mean, std, sizes = (t.numpy() for t in prompt_moments(torch.tensor(rewards), p))
    grpo = np.where(sizes > 1, (rewards - mean) / np.where(std > 0, std, 1), 0.0)
    summary = engine.tracker.summary()
    mu = np.array([summary[g]["mean"] for g in groups])
    sigma = np.array([summary[g]["std"] for g in groups])
    keep = (sizes > 1) & (sigma > 1e-3)
    rebuilt = std[keep] / sigma[keep] * grpo[keep] + (mean[keep] - mu[keep]) / sigma[keep]
    np.testing.assert_allclose(personalized[keep], rebuilt, rtol=1e-7, atol=1e-4)


def test_all_equal_rewards_give_zero_grpo_but_a_signal_under_pgrpo() -> None:
    engine = AdvantageEngine(estimator="pgrpo")
    groups = ["u"] * 8
    engine(torch.tensor([0.0, 1, 0, 1, 0, 1, 0, 1]), torch.arange(8) // 4, groups)  # history: mean 0.5
    advantages = engine(torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.long), groups[:4])
    assert torch.all(advantages > 0)
    grpo = get_estimator("grpo")(
        AdvantageBatch(
            torch.ones(4, dtype=torch.float64),
            torch.zeros(4, dtype=torch.long),
            *[torch.zeros(4)] * 2,
            torch.zeros(4, dtype=torch.bool),
        ),
        EPS,
    )
    assert torch.all(grpo == 0)


def test_update_order_and_evaluation_mode() -> None:
    rewards, prompts = torch.tensor([1.0, 3.0]), torch.tensor([0, 0])
    first = AdvantageEngine(estimator="pgrpo", min_count=1, update_order="update_then_normalize")
    after = AdvantageEngine(estimator="pgrpo", min_count=1, update_order="normalize_then_update")
    torch.testing.assert_close(
        first(rewards, prompts, ["g", "g"]), torch.tensor([-1.0, 1.0], dtype=torch.float64), atol=1e-3, rtol=0
    )
    # strictly past history: the first batch has none, so it falls back to GRPO (sample std = sqrt 2)
    torch.testing.assert_close(
        after(rewards, prompts, ["g", "g"]), torch.tensor([-1, 1], dtype=torch.float64) / (math.sqrt(2) + EPS)
    )
    assert after.tracker.summary()["g"]["count"] == 2
    state = first.state_dict()
    first(torch.tensor([10.0, 20.0]), prompts, ["g", "unseen"], update=False)
    assert first.state_dict() == state and "unseen" not in first.tracker.labels


def test_min_count_cold_start_falls_back_to_grpo() -> None:
    engine = AdvantageEngine(estimator="pgrpo", min_count=5)
    rewards, prompts = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1])
    expected = get_estimator("grpo")(
        AdvantageBatch(rewards.double(), prompts, *[torch.zeros(4)] * 2, torch.zeros(4, dtype=torch.bool)), EPS
    )
    torch.testing.assert_close(engine(rewards, prompts, ["a"] * 4), expected)
    assert not torch.allclose(engine(rewards, prompts, ["a"] * 4), expected)  # 8 rewards now: history is used


def test_history_kinds_feed_the_estimator() -> None:
    for history, options in [("ema", {"decay": 0.5}), ("window", {"window": 3})]:
        engine = AdvantageEngine(estimator="pgrpo", history=history, min_count=1, **options)
        rewards = torch.tensor([0.0, 1.0, 2.0, 10.0])
        advantages = engine(rewards, torch.tensor([0, 0, 1, 1]), ["g"] * 4)
        reference = history_reference(rewards.numpy(), ["g"] * 4, history, **options)["g"]
        torch.testing.assert_close(advantages, (rewards.double() - reference[1]) / (reference[2] + EPS))


def test_window_history_never_divides_a_batch_by_a_smaller_windows_spread() -> None:
    """The window=2 report: rewards [5, 0, 1, 1] got [4e4, -1e4, 0, 0], normalized by their last two (std 0)."""
    engine = AdvantageEngine(estimator="pgrpo", history="window", window=2)
    rewards = torch.tensor([5.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    advantages = engine(rewards, torch.zeros(4, dtype=torch.long), ["g"] * 4)
    x = rewards.numpy()
    torch.testing.assert_close(advantages, torch.from_numpy((x - x.mean()) / (x.std() + EPS)))
    assert engine.tracker.state_dict()["window_values"] == [[1.0, 1.0]]


def test_a_window_shorter_than_min_count_is_refused_only_for_the_window_history() -> None:
    with pytest.raises(ValueError, match=r"window=4 .* min_count=5"):
        EngineOptions(history="window", window=4, min_count=5)
    assert EngineOptions(history="cumulative", window=4, min_count=5).min_count == 5


def test_new_estimator_is_one_decorated_function() -> None:
    @register_estimator("test_double_dr_grpo")
    def double(batch: AdvantageBatch, eps: float) -> torch.Tensor:
        return 2 * get_estimator("dr_grpo")(batch, eps)

    try:
        engine = AdvantageEngine(estimator="test_double_dr_grpo")
        out = engine(torch.tensor([1.0, 3.0, math.nan]), torch.tensor([0, 0, 0]), ["a"] * 3)
        assert out.tolist() == [-2.0, 2.0, 0.0]
        with pytest.raises(ValueError, match="already registered"):
            register_estimator("test_double_dr_grpo")(double)
    finally:
        ESTIMATORS.pop("test_double_dr_grpo")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"estimator": "ppo"}, "Unknown advantage estimator"),
        ({"history": "ema", "decay": 1.5}, "decay"),
        ({"history": "window", "window": -1}, "window"),
        ({"history": "window", "window": 1}, "window must be a positive integer"),
        ({"history": "window", "window": 4, "min_count": 5}, "min_count"),
        ({"min_count": 0}, "min_count"),
        ({"eps": -1.0}, "eps"),
        ({"update_order": "sometimes"}, "update_order"),
    ],
)
def test_engine_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineOptions(**options)


def test_engine_refuses_mismatched_lengths_and_other_estimators_state() -> None:
    engine = AdvantageEngine()
    with pytest.raises(ValueError, match="one entry per completion"):
        engine(torch.ones(3), torch.zeros(3, dtype=torch.long), ["a", "b"])
    with pytest.raises(ValueError, match="estimator="):
        AdvantageEngine(estimator="grpo").load_state_dict(engine.state_dict())
    assert isinstance(engine.tracker, GroupRewardTracker)
