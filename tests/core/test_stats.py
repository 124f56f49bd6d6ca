"""GroupRewardTracker against direct NumPy float64 references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrpo.core import AdvantageEngine, GroupRewardTracker, segment_moments
from tests.core.reference import history_reference

HISTORIES = [("cumulative", {}), ("ema", {"decay": 0.9}), ("window", {"window": 5})]


@st.composite
def reward_stream(draw, max_groups: int = 6, max_len: int = 60):
    """Random labels (str and int mixed), rewards with NaNs, offsets, split into random batches."""
    n = draw(st.integers(1, max_len))
    pool = draw(
        st.lists(
            st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "persona x"])),
            min_size=1,
            max_size=max_groups,
            unique=True,
        )
    )
    groups = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    offset = draw(st.sampled_from([0.0, 1e6, -1e3]))
    rewards = draw(st.lists(st.one_of(st.floats(-10, 10), st.just(math.nan)), min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=5))) | {0, n})
    return np.array(rewards) + offset, groups, cuts


def feed(tracker: GroupRewardTracker, rewards: np.ndarray, groups: list, cuts: list[int]) -> None:
    for start, stop in itertools.pairwise(cuts):
        if stop > start:
            index = tracker.encode(groups[start:stop])
            tracker.update(torch.tensor(rewards[start:stop]), index)


@pytest.mark.parametrize(("history", "options"), HISTORIES)
@pytest.mark.parametrize("unbiased", [False, True])
@settings(max_examples=60, deadline=None)
@given(stream=reward_stream())
def test_tracker_matches_numpy_reference(history: str, options: dict, unbiased: bool, stream) -> None:
    rewards, groups, cuts = stream
    tracker = GroupRewardTracker(history, **options)
    feed(tracker, rewards, groups, cuts)
    reference = history_reference(rewards, groups, history, unbiased=unbiased, cuts=cuts, **options)
    summary = tracker.summary(unbiased)
    assert list(summary) == list(reference)  # labels indexed in order of first appearance
    for label, (count, mean, std) in reference.items():
        scale = max(1.0, abs(mean))
        assert summary[label]["count"] == count
        assert summary[label]["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-9 * scale)
        assert summary[label]["std"] == pytest.approx(std, rel=1e-6, abs=1e-6 * scale)


# The window equals its one-at-a-time version only while no group gets more than `window` rewards in one batch (a
# bigger batch is normalized by all its rewards): a window longer than any stream here.
@pytest.mark.parametrize(("history", "options"), [*HISTORIES[:2], ("window", {"window": 64})])
@settings(max_examples=40, deadline=None)
@given(stream=reward_stream())
def test_batched_update_equals_sequential_welford(history: str, options: dict, stream) -> None:
    rewards, groups, _ = stream
    batched, sequential = GroupRewardTracker(history, **options), GroupRewardTracker(history, **options)
    feed(batched, rewards, groups, [0, len(rewards)])
    feed(sequential, rewards, groups, list(range(len(rewards) + 1)))
    one_batch, one_by_one = batched.state_dict(), sequential.state_dict()
    for name in ("count", "weight", "weight_sq", "mean", "m2"):
        np.testing.assert_allclose(one_batch[name], one_by_one[name], rtol=1e-9, atol=1e-6)
    assert one_batch.get("window_values") == one_by_one.get("window_values")


@pytest.mark.parametrize(("history", "options"), HISTORIES)
@settings(max_examples=30, deadline=None)
@given(stream=reward_stream())
def test_state_round_trips_exactly_through_json(history: str, options: dict, stream) -> None:
    rewards, groups, cuts = stream
    tracker = GroupRewardTracker(history, **options)
    feed(tracker, rewards, groups, cuts)
    restored = GroupRewardTracker(history, **options)
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored.state_dict() == tracker.state_dict()
    assert restored.labels == tracker.labels and [type(x) for x in restored.labels] == [type(x) for x in tracker.labels]
    # the restored history keeps evolving exactly like the original
    more = torch.linspace(-1, 1, len(groups), dtype=torch.float64)
    for t in (tracker, restored):
        t.update(more, t.encode(groups))
    assert restored.state_dict() == tracker.state_dict()


def test_large_offsets_and_ten_million_rewards_stay_accurate() -> None:
    generator = np.random.default_rng(0)
    n, k = 10_000_000, 10
    groups = generator.integers(0, k, n)
    rewards = 1e6 + generator.normal(0, 1, n) * (1 + groups)
    tracker = GroupRewardTracker()
    index = tracker.encode(torch.from_numpy(groups))
    for chunk in np.array_split(np.arange(n), 4):
        tracker.update(torch.from_numpy(rewards[chunk]), index[chunk])
    summary = tracker.summary()
    for label in range(k):
        x = rewards[groups == label]
        assert summary[label]["count"] == len(x)
        assert summary[label]["mean"] == pytest.approx(x.mean(), rel=1e-13)
        assert summary[label]["std"] == pytest.approx(x.std(), rel=1e-9)


def test_labels_are_stable_and_unseen_labels_map_to_minus_one_in_eval() -> None:
    tracker = GroupRewardTracker()
    assert tracker.encode(["b", "a", 3, "b"]).tolist() == [0, 1, 2, 0]
    assert tracker.encode([3, "new"], add=False).tolist() == [2, -1]
    assert tracker.labels == ["b", "a", 3]
    mean, _std, count = tracker.moments(torch.tensor([-1, 0]))
    assert count.tolist() == [0.0, 0.0] and mean.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a", None], "missing"),
        (["a", float("nan")], "missing"),
        (["a", "  "], "empty"),
        ([1.5], "str or int"),
        ([True], "str or int"),
    ],
)
def test_bad_labels_raise_clear_errors(labels: list, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        GroupRewardTracker().encode(labels)


@pytest.mark.parametrize("bad", [1.5, "", None, True])
def test_a_failed_encode_leaves_the_tracker_unchanged(bad) -> None:
    tracker = GroupRewardTracker()
    tracker.update(torch.tensor([1.0, 2.0]), tracker.encode(["known", "known"]))
    before = tracker.state_dict()
    with pytest.raises((ValueError, TypeError)):
        tracker.encode(["a", "b", bad, "known"])
    assert tracker.state_dict() == before and tracker.labels == ["known"]
    assert tracker.encode(["b"]).tolist() == [1]  # the next new label still gets the next index


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": "median"}, "Unknown history"),
        ({"history": "ema", "decay": 1.0}, "decay"),
        ({"decay": 0.0}, "decay"),
        ({"history": "window", "window": 0}, "window"),
        ({"history": "window", "window": 1}, "window"),
        ({"window": 2.5}, "window"),
    ],
)
def test_bad_history_options_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GroupRewardTracker(**kwargs)


def test_loading_a_state_with_other_settings_is_refused() -> None:
    state = GroupRewardTracker("ema", decay=0.9).state_dict()
    with pytest.raises(ValueError, match="history="):
        GroupRewardTracker("cumulative").load_state_dict(state)
    with pytest.raises(ValueError, match="decay="):
        GroupRewardTracker("ema", decay=0.5).load_state_dict(state)


def test_segment_moments_matches_numpy() -> None:
    values = torch.tensor([1.0, 2.0, math.nan, 4.0, 10.0], dtype=torch.float64)
    index = torch.tensor([0, 0, 0, 1, 2])
    mean, std, count = segment_moments(values, index, 4, unbiased=True)
    assert mean.tolist() == [1.5, 4.0, 10.0, 0.0]
    assert count.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert std.tolist() == pytest.approx([np.std([1, 2], ddof=1), 0.0, 0.0, 0.0])


def test_a_batch_bigger_than_the_window_is_normalized_by_all_its_rewards() -> None:
    tracker = GroupRewardTracker("window", window=3)
    first = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 1.0])  # 6 rewards of "a" (more than the window), 1 of "b"
    groups = ["a"] * 6 + ["b"]
    tracker.update(torch.tensor(first), tracker.encode(groups))
    summary = tracker.summary()
    assert summary["a"]["mean"] == pytest.approx(np.mean(first[:6]))
    assert summary["a"]["std"] == pytest.approx(np.std(first[:6]))
    assert tracker.state_dict()["window_values"] == [[6.0, 5.0, 4.0], [1.0]]  # the buffer keeps the last 3
    # the next batch is small: back to the last `window` rewards, the new one included
    tracker.update(torch.tensor([0.0]), tracker.encode(["a"]))
    assert tracker.summary()["a"]["mean"] == pytest.approx(np.mean([5.0, 4.0, 0.0]))
    assert tracker.summary()["a"]["count"] == 7


# Written by pgrpo before the histories were split into classes (and before loss weightings): checkpoints in the wild.
OLD_ENGINE_STATE = {
    "options": {
        "estimator": "pgrpo", "history": "window", "decay": 0.99, "window": 3, "eps": 0.0001, "unbiased": False,
        "min_count": 2, "update_order": "update_then_normalize",
    },
    "tracker": {
        "version": 1, "history": "window", "decay": 0.99, "window": 3, "labels": ["a", 7],
        "count": [4.0, 2.0], "weight": [3.0, 2.0], "weight_sq": [3.0, 2.0],
        "mean": [1.8333333333333333, 4.5], "m2": [3.166666666666667, 0.5],
        "window_values": [[2.0, 0.5, 3.0], [4.0, 5.0]],
    },
    "group_column": "persona",
}  # fmt: skip


def test_a_state_file_of_the_previous_layout_loads_and_keeps_going() -> None:
    engine = AdvantageEngine(history="window", window=3, group_column="persona")
    engine.load_state_dict(json.loads(json.dumps(OLD_ENGINE_STATE)))
    assert engine.tracker.state_dict() == OLD_ENGINE_STATE["tracker"]
    assert engine.tracker.summary()["a"] == {
        "count": 4.0,
        "mean": 1.8333333333333333,
        "std": pytest.approx(np.std([2, 0.5, 3])),
    }
    engine(torch.tensor([6.0]), torch.tensor([0]), [7])  # the ring buffer continues where the saved one stopped
    assert engine.tracker.state_dict()["window_values"] == [[2.0, 0.5, 3.0], [4.0, 5.0, 6.0]]
    engine(torch.tensor([9.0]), torch.tensor([0]), [7])
    assert engine.tracker.state_dict()["window_values"][1] == [5.0, 6.0, 9.0]
    assert engine.tracker.summary()[7]["mean"] == pytest.approx(np.mean([5.0, 6.0, 9.0]))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda state: state["window_values"][0].pop(),
        lambda state: state["window_values"].pop(),
        lambda state: state["m2"].append(1.0),
        lambda state: state["labels"].__setitem__(1, "a"),
        lambda state: state["labels"].__setitem__(1, 1.5),
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(corrupt) -> None:
    source = GroupRewardTracker("window", window=3)
    source.update(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), source.encode(["a", "a", "b", "a", "a"]))
    state = json.loads(json.dumps(source.state_dict()))
    corrupt(state)
    tracker = GroupRewardTracker("window", window=3)
    tracker.update(torch.tensor([7.0]), tracker.encode(["z"]))
    before = tracker.state_dict()
    with pytest.raises(ValueError, match=r"corrupt|values for"):
        tracker.load_state_dict(state)
    assert tracker.state_dict() == before
