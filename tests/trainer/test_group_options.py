"""Group-aware training options through TRL: group-balanced prompt sampling and loss weightings.

Expected values come from the NumPy references in ``tests/core/reference.py`` and from TRL's ``RepeatSampler``
layout written out here; the runs use the toy task, whose "small" group is every fourth prompt (25%).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pgrpo.testing import CPU_ARGS, toy_dataset
from pgrpo.trainer import PGRPOConfig
from pgrpo.trainer.sampler import GroupBalancedSampler
from pgrpo.trainer.trainer import STATS_FILE
from tests.core.reference import balanced_weights_reference, worst_group_reference
from tests.trainer.test_trainer import RecordingTrainer, make_trainer, reference_advantages


def test_sampler_keeps_trls_layout_and_draws_groups_by_share_to_the_alpha() -> None:
    groups = torch.tensor([1, 0, 0, 0] * 25)  # group 1 holds 25% of the rows
    sampler = GroupBalancedSampler(groups, alpha=0.0, mini_repeat_count=4, batch_size=2, repeat_count=3, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == (100 // 2) * 2 * 4 * 3
    chunks = np.array(order).reshape(-1, 3, 2 * 4)  # per generation batch: repeat_count copies of 2 prompts x 4
    assert (chunks == chunks[:, :1]).all()  # each generation batch is reused repeat_count times in a row
    prompts = chunks[:, 0].reshape(-1, 2, 4)
    assert (prompts == prompts[..., :1]).all()  # each prompt's G completions are consecutive
    assert order == list(sampler)  # the same epoch draws the same order (every process, and a resumed run)
    sampler.set_epoch(1)
    assert list(sampler) != order
    drawn = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn += [int(groups[i]) for i in list(sampler)[:: 4 * 3]]  # one entry per drawn prompt
    share = np.mean(drawn)  # alpha = 0: each group equally often, not 25%
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / len(drawn))  # 5 standard errors
    half = GroupBalancedSampler(groups, alpha=0.5, mini_repeat_count=1, batch_size=10, repeat_count=1, seed=3)
    draws = []
    for epoch in range(40):
        half.set_epoch(epoch)
        draws += [int(groups[i]) for i in half]
    expected = 0.25**0.5 / (0.25**0.5 + 0.75**0.5)  # p(group) proportional to share^alpha
    assert abs(np.mean(draws) - expected) < 5 * np.sqrt(expected * (1 - expected) / len(draws))


def test_balanced_sampling_trains_on_the_groups_equally(toy_model_dir: str, tmp_path: Path) -> None:
    counts = {}
    for alpha in (1.0, 0.0):
        trainer = make_trainer(
            toy_model_dir, tmp_path / str(alpha), 12, toy_dataset(48), RecordingTrainer, group_sampling_alpha=alpha,
            per_device_train_batch_size=16,
        )  # fmt: skip
        trainer.train()
        prompts = [g for batch in trainer.batches for g in batch["groups"][:: CPU_ARGS["num_generations"]]]
        counts[alpha] = Counter(prompts)
        assert len(prompts) == 12 * 4
    assert counts[1.0]["small"] == 12  # the data as it is: one epoch of 48 rows, 12 of them small
    assert counts[0.0]["small"] > 18  # vs 12 expected without balancing (binomial(48, 0.5): 24 +- 3.5)


def test_worst_group_weights_multiply_the_trained_advantages(toy_model_dir: str, tmp_path: Path) -> None:
    options = {"group_weighting": "worst_group", "group_weight_step": 0.5}
    trainer = make_trainer(toy_model_dir, tmp_path, 5, cls=RecordingTrainer, **options)
    trainer.train()
    batches = trainer.batches
    weights, log_weights = worst_group_reference(
        [(b["rewards"], b["groups"]) for b in batches], step=0.5, floor=0.2, ceiling=5.0, eps=1e-4
    )
    assert any(abs(value) > 0.05 for value in log_weights.values())  # the weights moved away from 1
    for index, batch in enumerate(batches):
        expected = reference_advantages(batches[: index + 1], "pgrpo", "cumulative", 1e-4) * weights[index]
        torch.testing.assert_close(batch["trained"], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    logged = [e["group/big/loss_weight"] for e in trainer.state.log_history if "group/big/loss_weight" in e]
    expected = [w[b["groups"].index("big")] for w, b in zip(weights, batches, strict=True) if "big" in b["groups"]]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)


def test_balanced_weights_and_grpo(toy_model_dir: str, tmp_path: Path) -> None:
    trainer = make_trainer(toy_model_dir, tmp_path, 3, cls=RecordingTrainer, estimator="grpo",
                           group_weighting="balanced")  # fmt: skip
    trainer.train()
    for index, batch in enumerate(trainer.batches):
        grpo = reference_advantages(trainer.batches[: index + 1], "grpo", "cumulative", 1e-4)
        expected = grpo * balanced_weights_reference(batch["groups"])
        torch.testing.assert_close(batch["trained"], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def test_resume_with_another_sampling_alpha_is_refused(toy_model_dir: str, tmp_path: Path) -> None:
    first = make_trainer(toy_model_dir, tmp_path, 2, save_strategy="steps", save_steps=2, group_sampling_alpha=0.0)
    first.train()
    assert json.loads((tmp_path / "checkpoint-2" / STATS_FILE).read_text())["sampling"] == {"alpha": 0.0}
    resumed = make_trainer(toy_model_dir, tmp_path, 3, group_sampling_alpha=0.5)
    with pytest.raises(ValueError, match=r"group_sampling_alpha=0\.0, this run uses 0\.5"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_sampling_alpha": -1.0}, "alpha must be a finite number >= 0"),
        ({"group_weighting": "dro"}, "Unknown loss weighting 'dro'"),
        ({"group_weighting": "worst_group", "group_weight_floor": 2.0}, "weight_floor must lie in"),
    ],
)
def test_group_options_are_validated_at_construction(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGRPOConfig(output_dir=str(tmp_path), **{**CPU_ARGS, **options})
