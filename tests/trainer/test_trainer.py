"""End-to-end PGRPOTrainer runs on CPU with a tiny Llama and a locally built tokenizer."""

from __future__ import annotations

import inspect
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from packaging.specifiers import SpecifierSet
from trl import GRPOConfig, GRPOTrainer

from pgrpo.core import ESTIMATORS
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import OVERRIDDEN_TRL_METHODS, SUPPORTED_TRL, PGRPOConfig, PGRPOTrainer, check_trl_version
from pgrpo.trainer.trainer import STATS_FILE


def make_trainer(model_dir: str, output_dir: Path, max_steps: int = 3, dataset=None, **overrides) -> PGRPOTrainer:
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, **{**CPU_ARGS, **overrides})
    return PGRPOTrainer(model=model_dir, reward_funcs=toy_reward, args=args, train_dataset=dataset or toy_dataset())


class RecordingTrainer(PGRPOTrainer):
    """Keeps every advantages tensor handed to the loss, to compare with what TRL logs."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.__dict__.setdefault("trained_advantages", []).append(output["advantages"].clone())
        self.last_rewards, self.last_groups = self._gathered_rewards.sum(1), list(self._gathered_groups)
        return output


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_trains_and_logs_per_group_metrics(toy_model_dir: str, tmp_path: Path, estimator: str) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, estimator=estimator)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    summary = trainer.advantage_engine.tracker.summary()
    assert set(summary) == {"big", "small"}
    assert sum(s["count"] for s in summary.values()) == 3 * 8  # one update per generation batch
    keys = set().union(*logs)
    for name in (
        "reward_mean",
        "reward_std",
        "advantage_mean",
        "advantage_std",
        "history_mean",
        "history_std",
        "history_count",
    ):
        assert f"group/big/{name}" in keys
    assert "group/worst_reward_mean" in keys


def test_trained_advantages_are_pgrpo_and_match_trl_logs(toy_model_dir: str, tmp_path: Path) -> None:
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=2, estimator="pgrpo", **CPU_ARGS)
    trainer = RecordingTrainer(model=toy_model_dir, reward_funcs=toy_reward, args=args, train_dataset=toy_dataset())
    trainer.train()
    trained = trainer.trained_advantages[-1]
    logged = torch.tensor(list(trainer._logs["advantages"]))
    torch.testing.assert_close(trained.double(), logged.double(), rtol=1e-6, atol=1e-6)
    # the last batch was normalized by the final history: A = (R - mu_p) / (sigma_p + eps)
    summary = trainer.advantage_engine.tracker.summary()
    mu = torch.tensor([summary[g]["mean"] for g in trainer.last_groups])
    sigma = torch.tensor([summary[g]["std"] for g in trainer.last_groups])
    expected = (trainer.last_rewards.double() - mu) / (sigma + args.advantage_eps)
    torch.testing.assert_close(trained.double(), expected, rtol=1e-5, atol=1e-5)


def test_estimator_grpo_reproduces_trl_grpo_trainer(toy_model_dir: str, tmp_path: Path) -> None:
    trl_args = GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=3, **CPU_ARGS)
    reference = GRPOTrainer(model=toy_model_dir, reward_funcs=toy_reward, args=trl_args, train_dataset=toy_dataset())
    reference.train()
    ours = make_trainer(toy_model_dir, tmp_path / "ours", estimator="grpo")
    ours.train()
    ref_logs = [e for e in reference.state.log_history if "loss" in e]
    our_logs = [e for e in ours.state.log_history if "loss" in e]
    for ref, mine in zip(ref_logs, our_logs, strict=True):
        assert mine["reward"] == pytest.approx(ref["reward"], abs=1e-6)
        assert mine["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    torch.testing.assert_close(
        torch.tensor(list(ours._logs["advantages"])),
        torch.tensor(list(reference._logs["advantages"])),
        rtol=1e-4,
        atol=1e-4,
    )
    for (name, mine), theirs in zip(
        ours.model.state_dict().items(), reference.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)


def test_checkpoint_resume_restores_group_statistics_exactly(toy_model_dir: str, tmp_path: Path) -> None:
    full = make_trainer(toy_model_dir, tmp_path / "full", max_steps=4)
    full.train()
    first = make_trainer(toy_model_dir, tmp_path / "run", max_steps=4, save_strategy="steps", save_steps=2)
    first.train()
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / STATS_FILE).read_text())
    assert sum(saved["tracker"]["count"]) == 2 * 8

    resumed = make_trainer(toy_model_dir, tmp_path / "run", max_steps=4, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.advantage_engine.state_dict() == full.advantage_engine.state_dict()
    assert resumed.advantage_engine.state_dict() == json.loads(
        (tmp_path / "run" / "checkpoint-4" / STATS_FILE).read_text()
    )


def test_resume_without_statistics_file_is_an_error(toy_model_dir: str, tmp_path: Path) -> None:
    first = make_trainer(toy_model_dir, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    (tmp_path / "checkpoint-2" / STATS_FILE).unlink()
    resumed = make_trainer(toy_model_dir, tmp_path, max_steps=4)
    with pytest.raises(FileNotFoundError, match=STATS_FILE):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_missing_group_column_names_the_columns(toy_model_dir: str, tmp_path: Path) -> None:
    dataset = toy_dataset().rename_column("group", "groups")
    with pytest.raises(ValueError, match=r"no preference-group column 'group'.*\['prompt', 'groups'\].*'groups'"):
        make_trainer(toy_model_dir, tmp_path, dataset=dataset)


@pytest.mark.parametrize("labels", [["a", None, "b", "a"], ["a", "", "b", "a"], [1.0, math.nan, 2.0, 1.0]])
def test_missing_or_empty_group_labels_are_rejected(toy_model_dir: str, tmp_path: Path, labels: list) -> None:
    dataset = Dataset.from_dict({"prompt": ["say something"] * 4, "group": labels})
    with pytest.raises(ValueError, match=r"train_dataset column 'group'.*(missing|empty)"):
        make_trainer(toy_model_dir, tmp_path, dataset=dataset)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"estimator": "ppo"}, "Unknown advantage estimator"),
        ({"history": "ema", "history_decay": 1.0}, "decay"),
        ({"history": "window", "history_window": 0}, "window"),
        ({"scale_rewards": "batch"}, "estimator='batch_std'"),
        ({"min_history_count": 0}, "min_count"),
        ({"update_order": "later"}, "update_order"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "sum_then_normalize"),
    ],
)
def test_config_is_validated_at_construction(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGRPOConfig(output_dir=str(tmp_path), **{**CPU_ARGS, **options})


def test_trl_version_pin_is_enforced_and_matches_the_package_metadata() -> None:
    check_trl_version("1.16.0")
    for version in ("1.15.2", "1.17.0", "2.0.0"):
        with pytest.raises(ImportError, match="trl"):
            check_trl_version(version)
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = next(d for d in pyproject["project"]["dependencies"] if d.startswith("trl"))
    assert SpecifierSet(declared.removeprefix("trl")) == SUPPORTED_TRL


def test_overridden_private_trl_methods_keep_their_signatures() -> None:
    for name, parameters in OVERRIDDEN_TRL_METHODS.items():
        method = getattr(GRPOTrainer, name, None)
        assert method is not None, f"GRPOTrainer.{name} is gone: PGRPOTrainer must be ported to this TRL release"
        assert tuple(inspect.signature(method).parameters) == parameters, f"GRPOTrainer.{name} changed signature"
        assert name in PGRPOTrainer.__dict__
