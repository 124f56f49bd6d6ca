"""A specialist (``--train_group g``) starts from exactly the policy the shared runs of its seed start from: the same
tiny policy (tokenizer, initialisation and warm start, built from the whole task) and the same trainer seed; only its
training prompts differ."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from trl import ModelConfig

from pgrpo.experiments.train import UNSET_OUTPUT_DIR, RunArguments, make_trainer, prepare
from pgrpo.tasks import Task, task_from_dataset
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig


def warm_started_toy_task() -> Task:
    """The toy task with demonstrations to warm-start a tiny policy on: "up" for the big group, "down" for the
    small one."""
    data = toy_dataset(64)
    demonstrations = Dataset.from_dict({
        "prompt": data["prompt"],
        "completion": [" up up" if group == "big" else " down down" for group in data["group"]],
    })  # fmt: skip
    return task_from_dataset(data, toy_reward, name="toy", sft_dataset=demonstrations, eval_fraction=0.25)


def initial_policy(run_dir: Path, train_group: str) -> tuple[dict[str, torch.Tensor], list[str], set[str]]:
    """The initial weights, vocabulary and train-prompt groups of a prepared `pgrpo train` run on the toy task."""
    run = RunArguments(task="toy", run_dir=str(run_dir), train_group=train_group)
    config = PGRPOConfig(output_dir=UNSET_OUTPUT_DIR, **CPU_ARGS)
    model_args = ModelConfig(model_name_or_path="tiny")
    prepared = prepare(run, config, model_args, warm_started_toy_task())
    trainer, _ = make_trainer(prepared, config, model_args)
    vocabulary = sorted(trainer.processing_class.get_vocab())
    return trainer.model.state_dict(), vocabulary, set(prepared.task.train_dataset[prepared.group_column])


def test_a_specialist_starts_from_the_shared_runs_initial_policy(tmp_path: Path) -> None:
    shared, shared_vocabulary, shared_groups = initial_policy(tmp_path / "shared", "")
    specialist, specialist_vocabulary, specialist_groups = initial_policy(tmp_path / "specialist", "small")
    assert shared_groups == {"big", "small"} and specialist_groups == {"small"}  # only its prompts differ
    assert specialist_vocabulary == shared_vocabulary  # "big" is in it, though no specialist prompt has it
    assert shared.keys() == specialist.keys()
    for name, weight in shared.items():
        torch.testing.assert_close(specialist[name], weight, rtol=0, atol=0, msg=name)
