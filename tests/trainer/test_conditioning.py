"""Prompt conditioning through TRL: the prompts TRL generates from and scores carry each row's group text."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from pgrpo.tasks.base import completion_text
from pgrpo.testing import CPU_ARGS, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}say {% endif %}"
)


def recording_reward(seen: list):
    def reward(prompts, completions, group, **kwargs):
        seen.extend(zip(prompts, group, strict=True))
        return toy_reward([completion_text(c) for c in completions], group)

    return reward


@pytest.mark.parametrize("estimator", ["grpo", "pgrpo"])
def test_every_prompt_trl_scores_carries_its_groups_text(toy_model_dir: str, tmp_path: Path, estimator: str) -> None:
    seen: list = []
    dataset = toy_dataset(16).map(lambda row: {"prompt": "say something"})  # the group only in the column
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=2, estimator=estimator, group_conditioning="prompt",
                       group_prompt_template="for {description}", group_descriptions={"small": "small group"},
                       **CPU_ARGS)  # fmt: skip
    reward = recording_reward(seen)
    trainer = PGRPOTrainer(toy_model_dir, reward, args=args, train_dataset=dataset, eval_dataset=dataset)
    trainer.train()
    assert len(seen) == 2 * CPU_ARGS["per_device_train_batch_size"]
    expected = {"small": "for small group say something", "big": "for big say something"}
    assert all(prompt == expected[group] for prompt, group in seen)
    assert {group for _, group in seen} == {"small", "big"}
    assert set(trainer.eval_dataset["prompt"]) == set(expected.values())  # held-out prompts the same way


def test_chat_prompts_get_the_group_as_a_system_message(toy_model_dir: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(toy_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    seen: list = []
    groups = ["small", "big"] * 4
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "say something"}]] * 8, "group": groups})
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=1, group_conditioning="prompt",
                       group_prompt_template="group {group}", **CPU_ARGS)  # fmt: skip
    trainer = PGRPOTrainer(toy_model_dir, recording_reward(seen), args=args, train_dataset=dataset,
                           processing_class=tokenizer)  # fmt: skip
    trainer.train()
    for prompt, group in seen:
        assert prompt == [{"role": "system", "content": f"group {group}"}, {"role": "user", "content": "say something"}]


def test_no_conditioning_leaves_the_prompts_alone(toy_model_dir: str, tmp_path: Path) -> None:
    seen: list = []
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=1, **CPU_ARGS)
    PGRPOTrainer(toy_model_dir, recording_reward(seen), args=args, train_dataset=toy_dataset(8)).train()
    assert all(prompt == f"say something for group {group}" for prompt, group in seen)


def test_a_tokenizer_that_cannot_read_the_groups_texts_is_refused_and_a_tiny_policy_built_for_them_reads_them(
    toy_model_dir: str, tmp_path: Path
) -> None:
    """The toy tokenizer knows neither "user" nor "terse" nor "chatty": each group would read the same unknown tokens"""
    from pgrpo.models import load_tokenizer, policy_path
    from pgrpo.tasks import task_from_dataset

    descriptions = {"big": "terse", "small": "chatty"}
    args = PGRPOConfig(output_dir=str(tmp_path), max_steps=1, group_conditioning="prompt",
                       group_descriptions=descriptions, **CPU_ARGS)  # fmt: skip
    with pytest.raises(ValueError, match=r"cannot tell groups 'small' and 'big' apart: the tokenizer reads both "
                       r"'User group: chatty\.' and 'User group: terse\.' as '<unk> group [^']*' \(words it does not "
                       r"know\).*"
                       r"policy_path\(task, 'tiny', conditioning=args\.conditioning\(\)\)"):  # fmt: skip
        PGRPOTrainer(toy_model_dir, toy_reward, args=args, train_dataset=toy_dataset(16))
    task = task_from_dataset(toy_dataset(32), toy_reward, group_descriptions=descriptions)
    assert task.group_descriptions == descriptions
    model = policy_path(task, "tiny", conditioning=args.conditioning(), sft_steps=0, hidden_size=16,
                        num_layers=1, num_heads=2)  # fmt: skip
    assert load_tokenizer(model).tokenize("User group: terse.") == ["user", "group", ":", "terse", "."]
    PGRPOTrainer(model, toy_reward, args=args, train_dataset=task.train_dataset)  # reads them: accepted
    with pytest.raises(ValueError, match=r"name \['smal'\], which are not groups of the dataset; its groups are "
                       r"\['big', 'small'\]"):  # fmt: skip
        task_from_dataset(toy_dataset(32), toy_reward, group_descriptions={"smal": "chatty"})
