"""End-to-end PGRPOTrainer runs on CPU with a tiny Llama and a locally built tokenizer.

Expected advantages and statistics come from the NumPy references in ``tests/core/reference.py``, fed the rewards
and labels TRL gathered; expected GRPO behaviour comes from TRL's own ``GRPOTrainer``.
"""

from __future__ import annotations

import inspect
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from packaging.specifiers import SpecifierSet
from trl import GRPOConfig, GRPOTrainer

from pgrpo.core import ESTIMATORS
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import OVERRIDDEN_TRL_METHODS, SUPPORTED_TRL, PGRPOConfig, PGRPOTrainer, check_trl_version
from pgrpo.trainer.config import CHECKPOINTING_FIELD
from pgrpo.trainer.cpu import CPUFastPath
from pgrpo.trainer.trainer import STATS_FILE
from tests.core.reference import advantage_reference, history_reference


def make_trainer(model_dir: str, output_dir: Path, max_steps: int = 3, dataset=None, cls=PGRPOTrainer, **overrides):
    args = PGRPOConfig(output_dir=str(output_dir), max_steps=max_steps, **{**CPU_ARGS, **overrides})
    return cls(model=model_dir, reward_funcs=toy_reward, args=args, train_dataset=dataset or toy_dataset())


class RecordingTrainer(PGRPOTrainer):
    """Records, per training generation batch, what TRL gathered and what was trained on."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.__dict__.setdefault("batches", []).append(
                {
                    "rewards": self._gathered_rewards.sum(1).double().numpy(),
                    "groups": list(self._gathered_groups),
                    "trained": output["advantages"].double().clone(),
                    "logged": torch.tensor(list(self._logs["advantages"])[-len(self._gathered_groups) :]).double(),
                }
            )
        return output


def batch_cuts(batches: list[dict]) -> list[int]:
    """Batch boundaries [0, n_1, n_1 + n_2, ...] of the concatenated rewards."""
    return np.cumsum([0] + [len(b["rewards"]) for b in batches]).tolist()


def reference_advantages(batches: list[dict], estimator: str, history: str, eps: float, **settings) -> np.ndarray:
    """P-GRPO advantages of the last batch from every batch's rewards: update the history, then normalize."""
    rewards = np.concatenate([b["rewards"] for b in batches])
    groups = [g for b in batches for g in b["groups"]]
    stats = history_reference(rewards, groups, history, cuts=batch_cuts(batches), **settings)
    last = batches[-1]
    mean = np.array([stats[g][1] for g in last["groups"]])
    std = np.array([stats[g][2] for g in last["groups"]])
    ready = np.array([stats[g][0] >= 2 for g in last["groups"]])
    prompt_index = np.arange(len(last["rewards"])) // CPU_ARGS["num_generations"]
    return advantage_reference(estimator, last["rewards"], prompt_index, mean, std, ready, eps)


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
    for name in ("reward_mean", "reward_std", "advantage_mean", "advantage_std", "history_mean", "history_std",
                 "history_count"):  # fmt: skip
        assert f"group/big/{name}" in keys
    assert {"group/worst_reward_running", "group/big/reward_running", "frac_zero_advantage"} <= keys


def test_logged_group_curves_carry_each_groups_running_reward(toy_model_dir: str, tmp_path: Path) -> None:
    """Every logged step holds every group seen so far, drawn in that step or not: the mean of its batch means over
    its last 5 batches; the worst group is the lowest of them (not of the groups the step drew)."""
    trainer = make_trainer(toy_model_dir, tmp_path, 8, cls=RecordingTrainer)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == len(trainer.batches) == 8
    batch_means: dict[str, list[float]] = {}
    carried = 0
    for entry, batch in zip(logs, trainer.batches, strict=True):
        for label in dict.fromkeys(batch["groups"]):
            batch_means.setdefault(label, []).append(batch["rewards"][np.array(batch["groups"]) == label].mean())
        expected = {label: float(np.mean(means[-5:])) for label, means in batch_means.items()}
        assert entry["group/worst_reward_running"] == pytest.approx(min(expected.values()), rel=1e-6)
        for label, value in expected.items():
            assert entry[f"group/{label}/reward_running"] == pytest.approx(value, rel=1e-6)
        carried += len(set(batch["groups"])) < len(expected)
    assert carried  # some step did not draw every group, and still logged them all


@pytest.mark.parametrize(
    ("history", "settings"),
    [("cumulative", {}), ("ema", {"decay": 0.9}), ("window", {"window": 12}), ("window", {"window": 4})],
)
def test_trained_advantages_equal_the_numpy_reference(
    toy_model_dir: str, tmp_path: Path, history: str, settings: dict
) -> None:
    options = {"history_decay": settings.get("decay", 0.99), "history_window": settings.get("window", 1024)}
    trainer = make_trainer(toy_model_dir, tmp_path, 4, cls=RecordingTrainer, history=history, **options)
    trainer.train()
    batches = trainer.batches
    assert len(batches) == 4
    rewards = np.concatenate([b["rewards"] for b in batches])
    assert np.ptp(rewards) > 0  # the toy rewards vary, so a wrong history would show
    expected = reference_advantages(batches, "pgrpo", history, 1e-4, **settings)
    torch.testing.assert_close(batches[-1]["trained"], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batches[-1]["logged"], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    stats = history_reference(
        rewards, [g for b in batches for g in b["groups"]], history, cuts=batch_cuts(batches), **settings
    )
    for label, values in trainer.advantage_engine.tracker.summary().items():
        assert (values["count"], values["mean"], values["std"]) == pytest.approx(stats[label], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("accumulation", "steps_per_generation", "iterations"),
    [(1, 1, 1), (2, None, 1), (1, 4, 1), (1, 2, 2), (2, 2, 2)],
)
def test_history_is_updated_once_per_generation_batch(
    toy_model_dir: str, tmp_path: Path, accumulation: int, steps_per_generation: int | None, iterations: int
) -> None:
    max_steps, per_device = 4, CPU_ARGS["per_device_train_batch_size"]
    trainer = make_trainer(
        toy_model_dir, tmp_path, max_steps, cls=RecordingTrainer, gradient_accumulation_steps=accumulation,
        steps_per_generation=steps_per_generation, num_iterations=iterations,
    )  # fmt: skip
    trainer.train()
    period = (steps_per_generation or accumulation) * iterations  # micro-steps that share one generation batch
    batches = max_steps * accumulation // period
    rewards_per_batch = per_device * (steps_per_generation or accumulation)
    assert len(trainer.batches) == batches and {len(b["groups"]) for b in trainer.batches} == {rewards_per_batch}
    assert sum(h["count"] for h in trainer.advantage_engine.tracker.summary().values()) == batches * rewards_per_batch


def test_estimator_grpo_trains_exactly_as_trl_grpo_trainer(toy_model_dir: str, tmp_path: Path) -> None:
    trl_args = GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=6, **CPU_ARGS)
    reference = GRPOTrainer(model=toy_model_dir, reward_funcs=toy_reward, args=trl_args, train_dataset=toy_dataset())
    reference.train()
    ours = make_trainer(toy_model_dir, tmp_path / "ours", 6, estimator="grpo")
    ours.share_prompt_prefix = False  # bit for bit; with it, equal up to summation order (tests/trainer/test_prefix.py)
    ours.inverse_cdf_sampling = False  # the same distribution, another stream: tests/models/test_token_sampling.py
    ours.train()
    ref_logs = [e for e in reference.state.log_history if "loss" in e]
    our_logs = [e for e in ours.state.log_history if "loss" in e]
    assert [(e["reward"], e["loss"]) for e in our_logs] == [(e["reward"], e["loss"]) for e in ref_logs]
    assert list(ours._logs["advantages"]) == list(reference._logs["advantages"])
    theirs = reference.model.state_dict()
    for name, mine in ours.model.state_dict().items():
        assert torch.equal(mine, theirs[name]), name
    assert any(e["reward"] > 0 for e in ref_logs)  # the runs learned something, so equality is not trivial


def test_trl_still_computes_grpo_advantages_where_pgrpo_replaces_them(toy_model_dir: str, tmp_path: Path) -> None:
    """The TRL contract we build on: `_calculate_rewards` returns the gathered (N, reward functions) rewards, in the
    order of the completions, G consecutive per prompt, and TRL's advantages are GRPO's on exactly those rewards."""
    trainer = make_trainer(toy_model_dir, tmp_path, 3, cls=RecordingTrainer, estimator="grpo")
    trainer.train()
    for batch in trainer.batches:
        prompt_index = np.arange(len(batch["rewards"])) // CPU_ARGS["num_generations"]
        zeros = np.zeros(len(prompt_index))
        expected = advantage_reference("grpo", batch["rewards"], prompt_index, zeros, zeros, zeros > 0, 1e-4)
        torch.testing.assert_close(batch["trained"], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


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
    saved = json.loads((tmp_path / "run" / "checkpoint-4" / STATS_FILE).read_text())
    assert saved.pop("sampling") == {"alpha": 1.0} and resumed.advantage_engine.state_dict() == saved


def test_resume_of_a_tied_model_warns_of_no_missing_weights(
    toy_model_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pgrpo.testing import build_toy_model_dir

    tied_dir = build_toy_model_dir(tmp_path / "tied", tie_word_embeddings=True)
    first = make_trainer(tied_dir, tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    resumed = make_trainer(tied_dir, tmp_path / "run", max_steps=3)
    with caplog.at_level("WARNING", logger="transformers.trainer"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert "missing keys" not in caplog.text
    model = resumed.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied


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


def test_device_defaults_follow_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = PGRPOConfig(output_dir=str(tmp_path))
    assert (cpu.bf16, cpu.gradient_checkpointing) == (False, False)  # TRL's defaults are True, True
    kept = PGRPOConfig(output_dir=str(tmp_path), gradient_checkpointing=True)
    assert kept.gradient_checkpointing and getattr(kept, CHECKPOINTING_FIELD)
    # There is no GPU here: pretend a bf16-capable one for the defaults only (the one thing mocked here).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    for use_cpu, expected in ((False, (True, True)), (True, (False, False))):
        cpu.bf16 = cpu.gradient_checkpointing = None
        setattr(cpu, CHECKPOINTING_FIELD, None)
        cpu.use_cpu = use_cpu
        cpu.resolve_device_defaults()
        assert (cpu.bf16, getattr(cpu, CHECKPOINTING_FIELD)) == expected


def test_trl_version_pin_is_enforced_and_matches_the_package_metadata() -> None:
    check_trl_version("1.16.0")
    for version in ("1.15.2", "1.17.0", "2.0.0"):
        with pytest.raises(ImportError, match="trl"):
            check_trl_version(version)
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = next(d for d in pyproject["project"]["dependencies"] if d.startswith("trl"))
    assert SpecifierSet(declared.removeprefix("trl")) == SUPPORTED_TRL


def parameters(function: Any) -> list[tuple[str, str, Any]]:
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(function).parameters.values()]


def check_override_keeps_parameters(name: str, override: Any, trl_method: Any) -> None:
    """``override`` takes TRL's parameters: the same list, or TRL's leading ones then ``**kwargs`` it forwards."""
    ours, theirs = parameters(override), parameters(trl_method)
    if ours == theirs:
        return
    named = [p for p in ours if p[1] not in ("VAR_POSITIONAL", "VAR_KEYWORD")]
    assert named == theirs[: len(named)], f"{name}: our parameters {named} differ from TRL's {theirs}"
    assert ours and ours[-1][1] == "VAR_KEYWORD", f"{name}: TRL's parameters {theirs[len(named) :]} are dropped"


def test_overridden_private_trl_methods_keep_trls_parameters() -> None:
    for name, recorded in OVERRIDDEN_TRL_METHODS.items():
        trl_method = getattr(GRPOTrainer, name, None)
        assert callable(trl_method), f"GRPOTrainer.{name} is gone: port PGRPOTrainer"
        assert tuple(inspect.signature(trl_method).parameters) == recorded.parameters, (
            f"{name}: update OVERRIDDEN_TRL_METHODS"
        )
        overrides = [cls.__dict__[name] for cls in (PGRPOTrainer, CPUFastPath) if name in cls.__dict__]
        assert overrides, f"neither PGRPOTrainer nor CPUFastPath overrides {name} any more"
        for override in overrides:
            check_override_keeps_parameters(name, override, trl_method)


def test_every_private_trl_override_is_listed_with_what_it_changes_and_existing_pinning_tests() -> None:
    private = {
        name
        for cls in (PGRPOTrainer, CPUFastPath)
        for name, value in cls.__dict__.items()
        if callable(value) and name.startswith("_") and not name.startswith("__") and hasattr(GRPOTrainer, name)
    }
    assert private == set(OVERRIDDEN_TRL_METHODS)  # an override of TRL's private methods is listed, and only those
    root = Path(__file__).parents[2]
    for name, override in OVERRIDDEN_TRL_METHODS.items():
        assert override.changes and override.pinned_by, name
        for pin in override.pinned_by:
            path, test = pin.split("::")
            assert f"def {test}(" in (root / path).read_text(), f"{name}: {pin} does not exist"


def test_the_override_check_catches_a_dropped_or_renamed_parameter() -> None:
    def dropped(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None):  # no **kwargs
        return None

    def renamed(self, model, ids, attention_mask, logits_to_keep, batch_size=None, **kwargs):
        return None

    def new_default(self, model, input_ids, attention_mask, logits_to_keep, batch_size=8, **kwargs):
        return None

    def forwards(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, **kwargs):
        return None

    trl_method = GRPOTrainer._get_per_token_logps_and_entropies
    for wrong in (dropped, renamed, new_default):
        with pytest.raises(AssertionError):
            check_override_keeps_parameters(wrong.__name__, wrong, trl_method)
    check_override_keeps_parameters("forwards", forwards, trl_method)
