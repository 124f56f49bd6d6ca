"""A toy preference-grouped task and a tiny policy for tests and benchmarks (built locally, no downloads).

Two groups with different reward scales: group ``"big"`` (the majority) scores the share of
``up`` words, group ``"small"`` scores the share of ``down`` words times 10.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pgrpo.tasks.base import Task, task_from_dataset
from pgrpo.trainer.config import CHECKPOINTING_FIELD

# GRPOConfig/PGRPOConfig arguments for tiny deterministic CPU runs in tests.
CPU_ARGS: dict[str, object] = {
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 6,
    "use_cpu": True,
    "bf16": False,
    CHECKPOINTING_FIELD: False,
    "report_to": "none",
    "logging_steps": 1,
    "learning_rate": 1e-2,
    "seed": 0,
    "data_seed": 0,
    "disable_tqdm": True,
    "save_strategy": "no",
}
WORDS = ["up", "down", "left", "right", "say", "something", "for", "group", "big", "small"]


def build_toy_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", bos_token="<eos>"
    )


def build_toy_model_dir(
    directory: Path, seed: int = 0, hidden_size: int = 32, num_layers: int = 1, tie_word_embeddings: bool = False
) -> str:
    tokenizer = build_toy_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def toy_dataset(num_rows: int = 32, small_every: int = 4) -> Dataset:
    groups = ["small" if i % small_every == 0 else "big" for i in range(num_rows)]
    return Dataset.from_dict({"prompt": [f"say something for group {g}" for g in groups], "group": groups})


def toy_reward(completions: list[str], group: list[str], **_: object) -> list[float]:
    rewards = []
    for text, label in zip(completions, group, strict=True):
        words = text.split() or [""]
        if label == "small":
            rewards.append(10.0 * words.count("down") / len(words))
        else:
            rewards.append(words.count("up") / len(words))
    return rewards


def toy_task(seed: int = 0, num_rows: int = 64) -> Task:
    """The toy dataset and reward as a task (for `pgrpo train --task pgrpo.testing:toy_task` with the toy model).

    num_rows: prompts, every fourth from the small group; a quarter is held out.
    """
    return task_from_dataset(toy_dataset(num_rows), toy_reward, name="toy", eval_fraction=0.25, seed=seed,
                             reward_range=(0.0, 10.0))  # fmt: skip
