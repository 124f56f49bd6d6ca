"""Loss weightings, alone and inside the engine, against direct NumPy references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrpo.core import WEIGHTINGS, AdvantageEngine, EngineOptions, LossWeighting, WeightingBatch, register_weighting
from tests.core.reference import balanced_weights_reference, worst_group_reference

EPS = 1e-4
HISTORIES = [("cumulative", {}), ("ema", {"decay": 0.9}), ("window", {"window": 4})]


@st.composite
def training_sequence(draw):
    """2-6 batches; labels from a pool of 4, some absent from some batches; NaN rewards; group-specific levels."""
    batches = []
    level = {"a": 0.0, "b": 1.0, "c": -2.0, 9: 0.5}
    offset = draw(st.sampled_from([0.0, 1e6]))
    for _ in range(draw(st.integers(2, 6))):
        n = draw(st.integers(1, 12))
        groups = draw(st.lists(st.sampled_from(list(level)), min_size=n, max_size=n))
        noise = draw(st.lists(st.one_of(st.floats(-2, 2), st.just(math.nan)), min_size=n, max_size=n))
        batches.append((np.array([offset + level[g] + x for g, x in zip(groups, noise, strict=True)]), groups))
    return batches


def run(engine: AdvantageEngine, rewards: np.ndarray, groups: list, update: bool = True) -> torch.Tensor:
    return engine(torch.tensor(rewards), torch.arange(len(rewards)) // 2, groups, update=update)


@pytest.mark.parametrize(("history", "options"), HISTORIES)
@pytest.mark.parametrize("update_order", ["update_then_normalize", "normalize_then_update"])
@settings(max_examples=40, deadline=None)
@given(batches=training_sequence(), step=st.sampled_from([0.1, 0.7]))
def test_worst_group_matches_the_reference_over_a_training_sequence(
    history: str, options: dict, update_order: str, batches, step: float
) -> None:
    common = {"history": history, "update_order": update_order, "min_count": 1, **options}
    weighted = AdvantageEngine(weighting="worst_group", weight_step=step, **common)
    plain = AdvantageEngine(**common)
    expected, log_weights = worst_group_reference(batches, step, 0.2, 5.0, EPS, history, **options)
    # A history mean at offset |R| is exact to ~1e-16 |R|; a step amplifies that by step / (s + eps) (1e3 when s = 0).
    finite = [rewards[np.isfinite(rewards)] for rewards, _ in batches]
    scale = max([1.0, *(np.abs(x).max() for x in finite if len(x))])
    tolerance = 1e-12 + 1e-14 * scale * sum(step / (x.std() + EPS) for x in finite if len(x))
    for (rewards, groups), expected_weights in zip(batches, expected, strict=True):
        advantages = run(weighted, rewards, groups)
        np.testing.assert_allclose(weighted.weights.numpy(), expected_weights, rtol=1e-9 + 2 * tolerance)
        assert weighted.weights.mean().item() == pytest.approx(1.0, rel=1e-12)
        assert torch.equal(advantages, run(plain, rewards, groups) * weighted.weights)  # A_i * w_i
    saved = weighted.state_dict()["weighting"]["log_weights"]
    labels = weighted.tracker.labels
    np.testing.assert_allclose(saved, [log_weights.get(label, 0.0) for label in labels], rtol=1e-9, atol=tolerance)


def log_weights_by_label(engine: AdvantageEngine) -> dict:
    return dict(zip(engine.tracker.labels, engine.state_dict()["weighting"]["log_weights"], strict=True))


def test_clip_bounds_nan_rewards_and_absent_groups() -> None:
    engine = AdvantageEngine(weighting="worst_group", weight_step=1.0, weight_floor=0.5, weight_ceiling=2.0)
    first = np.array([0.0, 0.0, 1.0, 1.0, 5.0, 5.0])
    run(engine, first, ["low", "low", "mid", "mid", "high", "high"])
    scale = first.std() + EPS  # history means 0, 1, 5: their average is 2
    mid = (2 - 1) / scale
    assert log_weights_by_label(engine) == {
        "low": math.log(2.0),  # 2 / scale = 0.93, clipped to the ceiling
        "mid": pytest.approx(mid, rel=1e-12),
        "high": math.log(0.5),  # -3 / scale = -1.39, clipped to the floor
    }
    np.testing.assert_allclose(
        engine.weights.numpy(),
        np.exp([*[math.log(2)] * 2, mid, mid, *[math.log(0.5)] * 2])
        / np.mean(np.exp([math.log(2), mid, math.log(0.5)])),
        rtol=1e-12,
    )

    # "low" has only NaN rewards and "high" is absent: they keep their log-weights; "mid", the only group present,
    # has no shortfall against the present groups' average (its own history mean): it keeps its weight too
    second = np.array([math.nan, math.nan, 0.0, 1.0])
    run(engine, second, ["low", "low", "mid", "mid"])
    assert log_weights_by_label(engine) == {
        "low": math.log(2.0),
        "mid": pytest.approx(mid, rel=1e-12),
        "high": math.log(0.5),
    }
    expected = np.exp([math.log(2.0), math.log(2.0), mid, mid])
    np.testing.assert_allclose(engine.weights.numpy(), expected / expected.mean(), rtol=1e-12)

    # a batch without a single finite reward moves nothing
    before = engine.state_dict()
    run(engine, np.array([math.nan, math.nan]), ["low", "high"])
    assert engine.state_dict()["weighting"] == before["weighting"]


def test_equal_rewards_with_eps_zero_step_to_a_bound_or_stay() -> None:
    engine = AdvantageEngine(weighting="worst_group", eps=0.0)
    run(engine, np.array([1.0, 1.0, 1.0]), ["a", "a", "b"])  # s = 0, no shortfall: 0 / 0 must not become NaN
    assert log_weights_by_label(engine) == {"a": 0.0, "b": 0.0}
    run(engine, np.array([3.0, 3.0]), ["a", "b"])  # s = 0; histories 5/3 and 2, average 11/6: a trails, b leads
    assert log_weights_by_label(engine) == {"a": math.log(5.0), "b": math.log(0.2)}
    np.testing.assert_allclose(engine.weights.numpy(), np.array([5.0, 0.2]) / 2.6, rtol=1e-12)


def test_evaluation_reads_the_weights_and_never_changes_them() -> None:
    engine = AdvantageEngine(weighting="worst_group", weight_step=0.5)
    run(engine, np.array([0.0, 1.0, 4.0, 5.0]), ["a", "a", "b", "b"])
    state = engine.state_dict()
    lam = log_weights_by_label(engine)
    run(engine, np.array([9.0, 0.0, 3.0, 3.0]), ["a", "unseen", "b", "b"], update=False)
    assert engine.state_dict() == state and "unseen" not in engine.tracker.labels
    expected = np.exp([lam["a"], 0.0, lam["b"], lam["b"]])  # a label unseen in training: lambda = 0
    np.testing.assert_allclose(engine.weights.numpy(), expected / expected.mean(), rtol=1e-12)


def test_state_round_trips_exactly_through_json_and_keeps_evolving_alike() -> None:
    batches = [
        (np.array([0.3, 1.0, 4.0, 5.0, math.nan]), ["a", "a", "b", "b", "c"]),
        (np.array([2.0, 2.5, 0.1]), ["c", "c", "a"]),
    ]
    engine = AdvantageEngine(weighting="worst_group", history="ema", decay=0.9, weight_step=0.3)
    for rewards, groups in batches:
        run(engine, rewards, groups)
    restored = AdvantageEngine(weighting="worst_group", history="ema", decay=0.9, weight_step=0.3)
    restored.load_state_dict(json.loads(json.dumps(engine.state_dict())))
    assert restored.state_dict() == engine.state_dict()
    for rewards, groups in [(np.array([1.0, 7.0, 3.0]), ["b", "d", "a"]), *batches]:
        assert torch.equal(run(restored, rewards, groups), run(engine, rewards, groups))
    assert restored.state_dict() == engine.state_dict()


def test_load_refuses_another_weighting_and_reads_states_saved_before_weightings() -> None:
    worst = AdvantageEngine(weighting="worst_group")
    run(worst, np.array([0.0, 1.0]), ["a", "b"])
    with pytest.raises(ValueError, match="made with weighting='worst_group' but this run uses weighting='none'"):
        AdvantageEngine().load_state_dict(worst.state_dict())
    unweighted = AdvantageEngine()
    run(unweighted, np.array([0.0, 1.0]), ["a", "b"])
    old_format = unweighted.state_dict()  # what checkpoints saved before weightings existed look like
    del old_format["weighting"]
    for name in ("weighting", "weight_step", "weight_floor", "weight_ceiling"):
        del old_format["options"][name]
    restored = AdvantageEngine()
    restored.load_state_dict(old_format)
    assert restored.state_dict() == unweighted.state_dict()
    with pytest.raises(ValueError, match="made with weighting='none' but this run uses weighting='worst_group'"):
        AdvantageEngine(weighting="worst_group").load_state_dict(old_format)


def test_a_malformed_weighting_state_is_refused_and_changes_nothing() -> None:
    engine = AdvantageEngine(weighting="worst_group")
    run(engine, np.array([0.0, 1.0]), ["a", "b"])
    state = engine.state_dict()
    for bad in ([0.1, 0.2, 0.3], [math.nan, 0.0], [[0.1], [0.2]]):
        corrupt = json.loads(json.dumps(state))
        corrupt["weighting"]["log_weights"] = bad
        other = AdvantageEngine(weighting="worst_group")
        run(other, np.array([5.0]), ["z"])
        before = other.state_dict()
        with pytest.raises(ValueError, match="corrupt"):
            other.load_state_dict(corrupt)
        assert other.state_dict() == before


def test_balanced_weights_give_every_present_group_the_same_total() -> None:
    groups = ["big"] * 6 + ["mid"] * 3 + ["tiny"] + ["big"] * 2
    rewards = np.arange(len(groups), dtype=np.float64)
    rewards[7] = math.nan  # a missing reward still counts as a completion of its group
    engine = AdvantageEngine(weighting="balanced")
    plain = AdvantageEngine()
    advantages = run(engine, rewards, groups)
    np.testing.assert_allclose(engine.weights.numpy(), balanced_weights_reference(groups), rtol=1e-15)
    totals = {g: engine.weights.numpy()[[x == g for x in groups]].sum() for g in ("big", "mid", "tiny")}
    assert totals == pytest.approx(dict.fromkeys(totals, len(groups) / 3)) and engine.weights.mean() == pytest.approx(1)
    assert torch.equal(advantages, run(plain, rewards, groups) * engine.weights)
    assert engine.state_dict()["weighting"] == {}
    # evaluation: labels unseen in training count as one group
    run(engine, np.zeros(4), ["big", "new1", "new2", "new2"], update=False)
    np.testing.assert_allclose(engine.weights.numpy(), [2.0, 2 / 3, 2 / 3, 2 / 3])


def test_no_weighting_is_bit_identical_to_the_bare_estimator() -> None:
    generator = np.random.default_rng(0)
    engine, bare = AdvantageEngine(min_count=3), AdvantageEngine(min_count=3)
    for _ in range(3):
        rewards = generator.normal(size=40) * 3 + 1e6
        rewards[generator.random(40) < 0.1] = math.nan
        groups = generator.choice(["a", "b", "c"], 40).tolist()
        prompt_index = torch.arange(40) // 4
        advantages = engine(torch.tensor(rewards), prompt_index, groups)
        group_index = bare.tracker.encode(groups)
        bare.tracker.update(torch.tensor(rewards), group_index)
        assert torch.equal(advantages, bare.estimate(torch.tensor(rewards), prompt_index, group_index))
        assert torch.equal(engine.weights, torch.ones(40, dtype=torch.float64))


def test_group_weights_report_the_last_batch_per_group() -> None:
    engine = AdvantageEngine(weighting="balanced")
    run(engine, np.zeros(4), ["a", "b", "b", "c"])
    run(engine, np.zeros(3), ["c", "a", "a"])
    group_weights = engine.group_weights.numpy()
    np.testing.assert_allclose(group_weights, [0.75, math.nan, 1.5])  # b is absent from the last batch
    assert engine.tracker.labels == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weighting": "dro"}, "Unknown loss weighting 'dro'"),
        ({"weight_step": 0.0}, "weight_step"),
        ({"weight_step": math.inf}, "weight_step"),
        ({"weight_step": "0.1"}, "weight_step"),
        ({"weight_floor": 0.0}, "weight_floor"),
        ({"weight_floor": 1.5}, "weight_floor"),
        ({"weight_floor": math.nan}, "weight_floor"),
        ({"weight_ceiling": 0.5}, "weight_ceiling"),
        ({"weight_ceiling": math.inf}, "weight_ceiling"),
        ({"weight_ceiling": True}, "weight_ceiling"),
    ],
)
def test_weighting_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineOptions(**options)


def test_new_weighting_is_one_decorated_class() -> None:
    @register_weighting("test_first_half")
    class FirstHalf(LossWeighting):
        def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor:
            weights = torch.zeros(batch.rewards.shape, dtype=torch.float64)
            weights[: len(weights) // 2] = 2.0
            return weights

    try:
        engine = AdvantageEngine(weighting="test_first_half", estimator="dr_grpo")
        assert run(engine, np.array([1.0, 3.0, 5.0, 7.0]), ["a"] * 4).tolist() == [-2.0, 2.0, 0.0, 0.0]
        with pytest.raises(ValueError, match="already registered"):
            register_weighting("test_first_half")(FirstHalf)
    finally:
        WEIGHTINGS.pop("test_first_half")
