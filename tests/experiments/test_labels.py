"""Label sources for the label-quality comparison: random, merged and discovered labels, and a run with each."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
from sklearn.metrics import normalized_mutual_info_score

from pgrpo.cli import main
from pgrpo.experiments.labels import merged_labels, random_labels, with_labels
from pgrpo.tasks import build_task
from tests.experiments.test_cli import train_argv


def test_random_labels_keep_the_sizes_and_lose_the_order() -> None:
    labels = ["a"] * 6 + ["b"] * 3 + ["c"]
    shuffled = random_labels(labels, seed=1)
    assert Counter(shuffled) == Counter(labels) and shuffled != labels
    assert random_labels(labels, seed=1) == shuffled and random_labels(labels, seed=2) != shuffled


def test_merged_labels_pair_the_groups_by_size() -> None:
    labels = ["d", "a", "b", "a", "c", "a", "b", "e", "c", "a", "b", "a"]  # sizes a 5, b 3, c 2, then d 1, e 1
    expected = ["c|d", "a|b", "a|b", "a|b", "c|d", "a|b", "a|b", "e", "c|d", "a|b", "a|b", "a|b"]
    assert merged_labels(labels) == expected


def test_task_labels_are_the_task_column_and_unknown_sources_are_refused() -> None:
    task = build_task("personas", num_train=70, num_eval=7)
    labelled, column = with_labels(task, "task", "group", seed=0)
    assert column == "group" and labelled is task
    with pytest.raises(ValueError, match="Unknown group_labels 'true'; choose one of task, random, merged, discovered"):
        with_labels(task, "true", "group", seed=0)


@pytest.mark.slow
def test_discovered_labels_recover_the_personas_from_the_prompt_text_and_are_cached() -> None:
    task = build_task("personas", num_train=700, num_eval=7)
    labelled, column = with_labels(task, "discovered", "group", seed=0)
    discovered = labelled.train_dataset[column]
    assert len(set(discovered)) == 7
    # each prompt names its persona, so the clusters should mostly follow them; shuffled labels score ~0
    assert normalized_mutual_info_score(task.train_dataset["group"], discovered) > 0.5
    again, _ = with_labels(task, "discovered", "group", seed=3)  # any training seed: the same cached clustering
    assert again.train_dataset[column] == discovered
    # held-out and warm-start prompts are assigned to the same clusters: they follow the personas too
    for data in (labelled.eval_dataset, labelled.sft_dataset):
        assert normalized_mutual_info_score(data["group"], data[column]) > 0.5


def test_held_out_and_warm_start_rows_get_labels_of_the_same_source() -> None:
    task = build_task("personas", num_train=140, num_eval=70, num_sft=70)
    randomized, column = with_labels(task, "random", "group", seed=4)
    for name in ("train_dataset", "eval_dataset", "sft_dataset"):
        data = getattr(randomized, name)
        assert Counter(data[column]) == Counter(data["group"])  # a permutation of each dataset's own labels
        assert data[column] != data["group"]
    again, _ = with_labels(task, "random", "group", seed=5)
    assert again.train_dataset[column] != randomized.train_dataset[column]  # the training seed permutes anew
    assert again.sft_dataset[column] == randomized.sft_dataset[column]  # one warm start for every training seed
    merged, column = with_labels(task, "merged", "group", seed=0)
    pairs = dict(zip(merged.train_dataset["group"], merged.train_dataset[column], strict=True))
    assert [pairs[g] for g in merged.eval_dataset["group"]] == merged.eval_dataset[column]
    assert pairs["eleanor"] == "eleanor|jamal"
    reviews_like = build_task("personas", num_train=70, num_eval=7).sft_dataset.remove_columns("group")
    unlabelled = with_labels(dataclasses.replace(task, sft_dataset=reviews_like), "random", "group", seed=0)[0]
    assert unlabelled.sft_dataset is reviews_like  # warm-start pairs without groups stay as they are


@pytest.mark.parametrize("source", ["random", "merged"])
def test_a_run_groups_by_the_chosen_labels_and_is_judged_by_the_task_groups(
    source: str, toy_model_dir: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    assert main(train_argv(toy_model_dir, run_dir, "--group_labels", source)) == 0
    stats = json.loads((run_dir / "checkpoints" / "checkpoint-2" / "pgrpo_group_stats.json").read_text())
    assert stats["group_column"] == f"labels_{source}"
    personas = {"eleanor", "jamal", "sofia", "hank", "iris", "ravi", "kemar"}
    merged = {"eleanor|jamal", "sofia|hank", "iris|ravi", "kemar"}  # 40/20/15/10/7/4/4%: ravi precedes kemar
    assert set(stats["tracker"]["labels"]) <= (personas if source == "random" else merged)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert set(evaluation["per_group_sampled"]) == personas
    assert json.loads((run_dir / "summary.json").read_text())["group_labels"] == source
