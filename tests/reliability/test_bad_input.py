"""Bad input, one test per case of the table in docs/reliability.md: a clear error or a documented behaviour.

"Nothing lost" is checked where it can be: an error leaves the group statistics as they were before the failing
batch, so the last checkpoint stays valid.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset

from pgrpo.core import AdvantageEngine, GroupRewardTracker, get_estimator
from pgrpo.core.estimators import AdvantageBatch
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.trainer import STATS_FILE


class RecordingTrainer(PGRPOTrainer):
    """Keeps (mode, gathered rewards, gathered groups, advantages handed to the loss) of every batch."""

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        rewards = self._gathered_rewards.sum(1).double()
        self.__dict__.setdefault("batches", []).append(
            (mode, rewards, list(self._gathered_groups), output["advantages"])
        )
        return output


def make_trainer(
    model_dir: str,
    output_dir: Path,
    max_steps: int = 1,
    dataset: Any = None,
    reward: Any = toy_reward,
    eval_dataset: Any = None,
    **overrides: Any,
) -> RecordingTrainer:
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, **{**CPU_ARGS, **overrides})
    return RecordingTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=args,
        train_dataset=toy_dataset() if dataset is None else dataset,
        eval_dataset=eval_dataset,
    )


def total_count(trainer: PGRPOTrainer) -> float:
    return float(trainer.advantage_engine.tracker.count.sum())


# ----------------------------------------------------------------------------------------------- datasets, labels
@pytest.mark.parametrize(
    ("column", "dataset_column", "message"),
    [
        ("group", "gruop", r"no preference-group column 'group'.*\['prompt', 'gruop'\].*Did you mean 'gruop'\?"),
        ("grup", "group", r"no preference-group column 'grup'.*Did you mean 'group'\?"),
        ("persona", "group", r"no preference-group column 'persona'.*\['prompt', 'group'\]"),
    ],
)
def test_missing_or_misspelled_group_column(
    toy_model_dir: str, tmp_path: Path, column: str, dataset_column: str, message: str
) -> None:
    dataset = toy_dataset().rename_column("group", dataset_column) if dataset_column != "group" else toy_dataset()
    with pytest.raises(ValueError, match=message):
        make_trainer(toy_model_dir, tmp_path, dataset=dataset, group_column=column)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a", None, "b", None], r"2 of 4 missing \(None or NaN\) at rows 1, 3\. Fill or drop those rows"),
        ([1.0, math.nan, 2.0, 1.0], r"1 of 4 missing \(None or NaN\) at row 1\."),
        (["a", "", "b", "a"], "1 of 4 empty strings at row 1"),  # had no position
        (["a", "   ", "b", "a"], "1 of 4 empty strings at row 1"),
        ([1.5, 2.5, 1.5, 2.5], r"4 of 4 of type float \(e\.g\. 1\.5\) at rows 0, 1, 2, 3"),
        ([True, False, True, False], r"4 of 4 of type bool \(e\.g\. True\)"),
        ([["a"], ["b"], ["a"], ["b"]], r"4 of 4 of type list \(e\.g\. \['a'\]\)"),
        (["a", None, "", None] + [None] * 6, r"8 of 10 missing .* at first rows 1, 3, 4, 5, 6; 1 of 10 empty strings"),
    ],
)
def test_none_nan_empty_or_non_label_values_are_rejected(
    toy_model_dir: str, tmp_path: Path, labels: list, message: str
) -> None:
    dataset = Dataset.from_dict({"prompt": ["say something"] * len(labels), "group": labels})
    with pytest.raises(ValueError, match=rf"train_dataset column 'group': Preference-group labels must be .*{message}"):
        make_trainer(toy_model_dir, tmp_path, dataset=dataset)


def test_eval_dataset_without_group_column_fails_at_construction(toy_model_dir: str, tmp_path: Path) -> None:
    evaluation = toy_dataset(8).remove_columns("group")
    with pytest.raises(ValueError, match=r"eval_dataset has no preference-group column 'group'"):
        make_trainer(toy_model_dir, tmp_path, eval_dataset=evaluation)


def test_streaming_dataset_with_a_missing_label_fails_at_its_batch(toy_model_dir: str, tmp_path: Path) -> None:
    def rows():  # no declared features: labels can only be checked when a batch arrives
        for i in range(16):
            yield {"prompt": f"say something for group big {i}", "group": None}

    dataset = IterableDataset.from_generator(rows)
    assert dataset.column_names is None
    trainer = make_trainer(toy_model_dir, tmp_path, dataset=dataset, max_steps=2)
    with pytest.raises(ValueError, match=r"label at position 0 is missing"):
        trainer.train()
    assert total_count(trainer) == 0  # the failing batch never reached the statistics


def test_remove_unused_columns_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="remove_unused_columns=True would drop the preference-group column 'group'"):
        PGRPOConfig(output_dir=str(tmp_path), **{**CPU_ARGS, "remove_unused_columns": True})


def test_group_seen_only_at_evaluation_falls_back_to_grpo(toy_model_dir: str, tmp_path: Path) -> None:
    evaluation = Dataset.from_dict({"prompt": ["say something for group big"] * 2, "group": ["newcomer"] * 2})
    trainer = make_trainer(toy_model_dir, tmp_path, eval_dataset=evaluation, per_device_eval_batch_size=8)
    trainer.train()
    before = trainer.advantage_engine.state_dict()
    metrics = trainer.evaluate()
    assert trainer.advantage_engine.state_dict() == before  # evaluation never writes the statistics
    assert "newcomer" not in trainer.advantage_engine.tracker.labels
    mode, rewards, groups, advantages = trainer.batches[-1]
    assert mode == "eval" and set(groups) == {"newcomer"}
    prompt_index = torch.arange(len(rewards)) // 4
    zeros = torch.zeros_like(rewards)
    grpo = get_estimator("grpo")(AdvantageBatch(rewards, prompt_index, zeros, zeros, zeros.bool()), 1e-4)
    torch.testing.assert_close(advantages.double(), grpo, rtol=1e-5, atol=1e-5)
    assert "eval_group/unseen/reward_mean" in metrics


def test_int_and_str_labels_are_different_groups() -> None:
    tracker = GroupRewardTracker()
    assert tracker.encode([1, "1", 1, np.int64(1)]).tolist() == [0, 1, 0, 0]
    assert tracker.labels == [1, "1"]


# ----------------------------------------------------------------------------------------------- reward functions
def test_reward_function_that_raises_propagates_and_keeps_the_statistics(toy_model_dir: str, tmp_path: Path) -> None:
    calls = []

    def flaky_reward(completions: list[str], **kwargs: Any) -> list[float]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("reward service unavailable")
        return toy_reward(completions, **kwargs)

    trainer = make_trainer(toy_model_dir, tmp_path, max_steps=3, reward=flaky_reward)
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        trainer.train()
    assert total_count(trainer) == 8  # the first batch, nothing of the failing one


def test_reward_function_with_wrong_length_is_named(toy_model_dir: str, tmp_path: Path) -> None:
    def short_reward(completions: list[str], **_: Any) -> list[float]:
        return [0.0] * (len(completions) - 1)

    trainer = make_trainer(toy_model_dir, tmp_path, reward=short_reward)
    with pytest.raises(ValueError, match="reward function 'short_reward' returned 7 rewards, but 8 were expected"):
        trainer.train()
    assert total_count(trainer) == 0


def test_nan_inf_and_none_rewards_are_excluded_and_advantages_stay_finite(toy_model_dir: str, tmp_path: Path) -> None:
    # inf, -inf, NaN, a large finite float32, a value that overflows float32 (-> inf), None (-> NaN), two ordinary
    values = [math.inf, -math.inf, math.nan, 1e38, 1e39, None, 0.5, 1.0]

    def wild_reward(completions: list[str], **_: Any) -> list[float | None]:
        return [values[i % len(values)] for i in range(len(completions))]

    trainer = make_trainer(toy_model_dir, tmp_path, max_steps=2, reward=wild_reward)
    trainer.train()
    for _, rewards, _, advantages in trainer.batches:
        assert torch.isfinite(advantages).all()
        assert (advantages[~torch.isfinite(rewards)] == 0).all()
    assert total_count(trainer) == 2 * 3  # per batch only 1e38, 0.5 and 1.0 are finite
    tracker = trainer.advantage_engine.tracker
    assert torch.isfinite(tracker.mean[: tracker.num_groups]).all() and torch.isfinite(tracker.std()).all()
    log = trainer.state.log_history[0]
    assert math.isfinite(log["loss"]) and log["reward"] is None  # TRL's own mean reward is NaN (logged as None)
    assert math.isfinite(log["group/big/reward_mean"])  # the per-group metrics leave non-finite rewards out


def test_all_rewards_none_gives_zero_advantages_and_no_history(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, reward=lambda completions, **_: [None] * len(completions))
    trainer.train()
    assert all((advantages == 0).all() for *_, advantages in trainer.batches)
    assert total_count(trainer) == 0 and set(trainer.advantage_engine.tracker.labels) <= {"small", "big"}


def test_a_group_without_any_reward_is_not_the_worst_group(toy_model_dir: str, tmp_path: Path) -> None:
    """The "small" group's rewards are all None: it has no mean, so the worst group is "big" (was: 0 for "small")."""

    def reward(completions, group, **_):
        return [None if g == "small" else 0.5 + 0.1 * len(c.split()) for c, g in zip(completions, group, strict=True)]

    trainer = make_trainer(toy_model_dir, tmp_path, max_steps=4, reward=reward)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "group/worst_reward_running" in entry]
    assert logs and all(entry["group/worst_reward_running"] >= 0.5 for entry in logs)
    assert all(entry["group/worst_reward_running"] == entry["group/big/reward_running"] for entry in logs)
    assert not any("group/small/reward_running" in entry for entry in logs)
    small = [entry for entry in logs if "group/small/nonfinite_rewards" in entry]
    assert small and all(entry["group/small/reward_mean"] is None for entry in small)  # no mean (was 0)
    assert sum(entry["group/small/nonfinite_rewards"] for entry in small) == trainer.nonfinite_rewards["small"] > 0
    assert "big" not in trainer.nonfinite_rewards


def test_all_rewards_equal_give_zero_advantages(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, reward=lambda completions, **_: [3.0] * len(completions))
    trainer.train()
    assert all((advantages == 0).all() for *_, advantages in trainer.batches)
    summary = trainer.advantage_engine.tracker.summary()
    assert {s["mean"] for s in summary.values()} == {3.0} and {s["std"] for s in summary.values()} == {0.0}


def test_deviation_after_constant_history_is_amplified_by_one_over_eps() -> None:
    """normalize_then_update: a group whose history has zero spread divides by eps alone (documented)."""
    engine = AdvantageEngine(update_order="normalize_then_update", min_count=2)
    prompt_index = torch.tensor([0, 0, 1, 1])
    engine(torch.zeros(4), prompt_index, ["a"] * 4)
    advantages = engine(torch.tensor([0.0, 1.0, 0.0, 0.0]), prompt_index, ["a"] * 4)
    assert advantages.tolist() == pytest.approx([0.0, 1.0 / 1e-4, 0.0, 0.0])
    # update_then_normalize (the default) folds the new reward in first: the spread is no longer zero
    engine = AdvantageEngine(min_count=2)
    engine(torch.zeros(4), prompt_index, ["a"] * 4)
    advantages = engine(torch.tensor([0.0, 1.0, 0.0, 0.0]), prompt_index, ["a"] * 4)
    assert advantages[1] == pytest.approx((1 - 1 / 8) / (math.sqrt(7) / 8 + 1e-4))


def test_rewards_on_a_huge_offset_keep_their_spread() -> None:
    """Offset 1e9: rewards 1e9 + k/256 are exact in float64, so integer sums give the exact mean and variance."""
    generator = np.random.default_rng(0)
    tracker = GroupRewardTracker()
    index = tracker.encode(["g"])
    total_k, total_k2, n = 0, 0, 0
    for _ in range(2):
        k = np.rint(generator.normal(0.5, 1.0, 2_000_000) * 256).astype(np.int64)
        tracker.update(torch.from_numpy(1e9 + k / 256), index.expand(len(k)))
        total_k, total_k2, n = total_k + int(k.sum()), total_k2 + int((k * k).sum()), n + len(k)
    exact_mean = 1e9 + total_k / (256 * n)
    exact_std = math.sqrt((total_k2 * n - total_k * total_k) / (n * n * 256 * 256))
    summary = tracker.summary()["g"]
    assert abs(summary["mean"] - exact_mean) < 1e-6 * exact_std  # float64 spacing at 1e9 is 1.2e-7
    assert summary["std"] == pytest.approx(exact_std, rel=1e-8)


# ----------------------------------------------------------------------------------------------- batch shapes
def test_single_group_trains(toy_model_dir: str, tmp_path: Path) -> None:
    dataset = Dataset.from_dict({"prompt": ["say something for group big"] * 16, "group": ["only"] * 16})
    trainer = make_trainer(toy_model_dir, tmp_path, dataset=dataset, reward=lambda completions, **_: [
        c.split().count("up") / max(len(c.split()), 1) for c in completions
    ])  # fmt: skip
    trainer.train()
    assert list(trainer.advantage_engine.tracker.summary()) == ["only"] and total_count(trainer) == 8
    _, rewards, _, advantages = trainer.batches[-1]
    summary = trainer.advantage_engine.tracker.summary()["only"]
    expected = (rewards - summary["mean"]) / (summary["std"] + 1e-4)
    torch.testing.assert_close(advantages.double(), expected, rtol=1e-5, atol=1e-5)


def test_one_hundred_thousand_groups_engine() -> None:
    num_groups, per_group = 100_000, 4
    labels = [f"user-{i}" for i in range(num_groups)] * per_group
    generator = torch.Generator().manual_seed(0)
    offsets = torch.arange(num_groups, dtype=torch.float64).repeat(per_group)
    engine = AdvantageEngine(min_count=1)
    prompt_index = torch.arange(num_groups * per_group) // 2
    for _ in range(2):
        rewards = offsets + torch.randn(num_groups * per_group, generator=generator, dtype=torch.float64)
        advantages = engine(rewards, prompt_index, labels)
    tracker = engine.tracker
    assert tracker.num_groups == num_groups and torch.isfinite(advantages).all()
    assert (tracker.count[:num_groups] == 2 * per_group).all()
    assert tracker.count.numel() <= 2 * num_groups  # O(1) memory per group (capacity doubles)
    np.testing.assert_allclose(tracker.mean[:num_groups].numpy(), np.arange(num_groups), atol=3.0)
    assert engine.tracker.encode(["never-seen"], add=False).tolist() == [-1]


def test_two_generations_per_prompt_train(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, num_generations=2, per_device_train_batch_size=4)
    trainer.train()
    assert total_count(trainer) == 4 and all(torch.isfinite(a).all() for *_, a in trainer.batches)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"per_device_train_batch_size": 6}, r"generation_batch_size \(6\) must be divisible by num_generations \(4\)"),
        ({"num_generations": 1, "per_device_train_batch_size": 4}, "GRPO requires at least 2 generations per prompt"),
    ],
)
def test_generation_batch_not_divisible_by_g_or_single_generation(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGRPOConfig(output_dir=str(tmp_path), **{**CPU_ARGS, **options})


# ----------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history": "ema", "history_decay": 1.0}, "decay must lie strictly between 0 and 1"),
        ({"history": "ema", "history_decay": 0.0}, "decay must lie strictly between 0 and 1"),
        ({"history": "ema", "history_decay": math.nan}, "decay must lie strictly between 0 and 1"),
        ({"history": "window", "history_window": 0}, "window must be a positive integer"),
        ({"history": "forever"}, "Unknown history kind 'forever'"),
        ({"estimator": "ppo"}, "Unknown advantage estimator 'ppo'"),
        ({"scale_rewards": "batch"}, "estimator='batch_std'"),
        ({"scale_rewards": "none"}, "estimator='dr_grpo'"),
        ({"advantage_eps": -1.0}, "eps must be >= 0"),
        ({"min_history_count": 0}, "min_count must be an integer >= 1"),
        ({"update_order": "later"}, "Unknown update_order 'later'"),
        ({"group_column": ""}, "group_column must name the dataset column"),
        ({"max_logged_groups": -1}, "max_logged_groups must be >= 0"),
    ],
)
def test_conflicting_or_invalid_config_is_rejected(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGRPOConfig(output_dir=str(tmp_path), **{**CPU_ARGS, **options})


# ----------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(toy_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoint-2 of a 2-step run with the default options (read-only: tests copy it)."""
    output_dir = tmp_path_factory.mktemp("checkpointed")
    make_trainer(toy_model_dir, output_dir, max_steps=2, save_strategy="steps", save_steps=2).train()
    return output_dir / "checkpoint-2"


def resume(toy_model_dir: str, checkpoint: Path, tmp_path: Path, edit: Any = None, **overrides: Any) -> None:
    """Copy ``checkpoint``, let ``edit`` damage its statistics file, and resume from the copy."""
    copy = tmp_path / "run" / checkpoint.name
    shutil.copytree(checkpoint, copy)
    if edit is not None:
        edit(copy / STATS_FILE)
    trainer = make_trainer(toy_model_dir, tmp_path / "run", max_steps=3, **overrides)
    trainer.train(resume_from_checkpoint=str(copy))


def edit_state(change: Any) -> Any:
    def edit(path: Path) -> None:
        state = json.loads(path.read_text())
        change(state)
        path.write_text(json.dumps(state))

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda path: path.unlink(), FileNotFoundError, rf"has no P-GRPO group statistics \({STATS_FILE}\)"),
        (lambda path: path.write_text(path.read_text()[:50]), ValueError, rf"{STATS_FILE} is corrupt or truncated"),
        (lambda path: path.write_text(""), ValueError, rf"{STATS_FILE} is corrupt or truncated"),
        (
            edit_state(lambda state: state["tracker"]["mean"].pop()),
            ValueError,
            rf"{STATS_FILE}: Group-statistics state field 'mean' has 1 values for 2 groups",
        ),
        (edit_state(lambda state: state.pop("tracker")), ValueError, rf"{STATS_FILE} is corrupt: it has no field"),
        (lambda path: path.write_text("[1, 2, 3]"), ValueError, rf"{STATS_FILE} is corrupt \("),
    ],
    ids=["missing", "truncated", "empty", "wrong-field-length", "missing-field", "not-an-object"],
)
def test_corrupt_checkpoint_statistics_are_an_error_naming_the_file(
    toy_model_dir: str, checkpoint: Path, tmp_path: Path, edit: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        resume(toy_model_dir, checkpoint, tmp_path, edit)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"group_column": "persona"}, "made with group_column='group' but this run uses group_column='persona'"),
        ({"estimator": "pgrpo_scale"}, "made with estimator='pgrpo' but this run uses estimator='pgrpo_scale'"),
        ({"history": "ema"}, "made with history='cumulative' but this run uses history='ema'"),
    ],
)
def test_resume_with_other_group_column_or_estimator_is_an_error(
    toy_model_dir: str, checkpoint: Path, tmp_path: Path, overrides: dict, message: str
) -> None:
    dataset = toy_dataset().rename_column("group", "persona") if "group_column" in overrides else None
    with pytest.raises(ValueError, match=rf"{STATS_FILE}: The saved group statistics were {message}"):
        resume(toy_model_dir, checkpoint, tmp_path, dataset=dataset, **overrides)


def test_partial_newest_checkpoint_names_the_missing_trainer_state(
    toy_model_dir: str, checkpoint: Path, tmp_path: Path
) -> None:
    """Killed while saving: the newest folder lacks trainer_state.json (written last); resume=True picks it."""
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "checkpoint-2")
    shutil.copytree(checkpoint, run / "checkpoint-3")
    (run / "checkpoint-3" / "trainer_state.json").unlink()
    trainer = make_trainer(toy_model_dir, run, max_steps=4)
    with pytest.raises(FileNotFoundError, match=r"checkpoint-3/trainer_state\.json"):
        trainer.train(resume_from_checkpoint=True)


def test_checkpoint_inside_a_buffered_generation_batch_warns(
    toy_model_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pgrpo.trainer.trainer"):
        make_trainer(toy_model_dir, tmp_path, 2, num_iterations=2, save_strategy="steps", save_steps=1).train()
    warned = [r.getMessage() for r in caplog.records if "inside a buffered generation batch" in r.getMessage()]
    assert len(warned) == 1 and "checkpoint-1" in warned[0]  # checkpoint-2 starts a new generation batch
