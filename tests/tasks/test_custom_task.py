"""A task from your own dataset: warm-start pairs reach the tiny policy; without them the error names the fixes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from pgrpo.models import generate_completions, tiny_policy_path
from pgrpo.tasks import task_from_dataset
from pgrpo.testing import toy_dataset, toy_reward

PROMPT = "say something for group big"
PAIRS = Dataset.from_dict({"prompt": [PROMPT] * 8, "completion": ["up up zebra"] * 8})


def greedy(path: Path) -> str:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return generate_completions(model, tokenizer, [PROMPT], max_new_tokens=4)[0].strip()


def test_warm_start_pairs_train_the_tiny_policy(tmp_path: Path) -> None:
    task = task_from_dataset(toy_dataset(32), toy_reward, sft_dataset=PAIRS)
    assert task.sft_dataset.to_dict() == PAIRS.to_dict()
    settings = {"hidden_size": 32, "num_heads": 2, "sft_batch_size": 8}
    warm = tiny_policy_path(task, tmp_path, sft_steps=40, **settings)
    cold = tiny_policy_path(task, tmp_path, sft_steps=0, **settings)
    assert math.isfinite(json.loads((warm / "pgrpo_policy.json").read_text())["sft_loss"])
    assert "zebra" in AutoTokenizer.from_pretrained(warm).get_vocab()  # the completions are part of the corpus
    assert greedy(warm) == "up up zebra" and greedy(cold) != "up up zebra"


def test_without_pairs_the_errors_name_the_fixes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sft_dataset lacks column\(s\) \['completion'\]"):
        task_from_dataset(toy_dataset(32), toy_reward, sft_dataset=PAIRS.remove_columns("completion"))
    task = task_from_dataset(toy_dataset(32), toy_reward)
    fixes = r"sft_dataset=pairs.*pass sft_steps=0.*--model_name_or_path PATH.*--model_name_or_path smollm2"
    with pytest.raises(ValueError, match=fixes):
        tiny_policy_path(task, tmp_path)
    assert (tiny_policy_path(task, tmp_path, sft_steps=0, hidden_size=32, num_heads=2) / "config.json").is_file()


def test_task_from_dataset_refuses_bad_labels_with_how_many_and_where() -> None:
    labels = ["terse", None, "casual", ""] + ["formal"] * 6 + [None] * 5
    dataset = Dataset.from_dict({"prompt": [f"question {i}" for i in range(len(labels))], "style": labels})
    with pytest.raises(ValueError, match=r"Dataset column 'style': Preference-group labels must be non-empty str or "
                       r"int: 6 of 15 missing \(None or NaN\) at first rows 1, 10, 11, 12, 13; 1 of 15 empty strings "
                       r"at row 3\."):  # fmt: skip
        task_from_dataset(dataset, lambda completions, **_: [0.0] * len(completions), group_column="style")
