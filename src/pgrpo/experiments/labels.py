"""Which preference-group labels a run normalizes and weights with: the label-quality comparison.

    task        the task's own groups (the default)
    random      the same labels randomly permuted over the prompts: sizes kept, meaning lost (the paper's ablation)
    merged      coarser groups: the task's groups ranked by size and paired (the two largest together, then the
                next two, ...), so half as many groups, each the union of two
    discovered  groups found without labels: k-means on the prompts' all-MiniLM-L6-v2 embeddings
                (``pgrpo.groups``), k = the task's number of groups, fitted once per task and cached

Only the labels the trainer reads change: the reward and the held-out evaluation keep the task's own
groups, so every label source is judged by the same per-group results. The held-out and warm-start rows get
labels of the same source too (random: their own permutation; merged: the same pairs; discovered: the nearest
fitted cluster), which group conditioning puts into their prompts; warm-start pairs without groups stay as they are.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

from pgrpo.models.cache import build_once, default_cache_dir, fingerprint
from pgrpo.tasks import Task

LABEL_SOURCES = ("task", "random", "merged", "discovered")
LABEL_COLUMN = "labels_{source}"
TRAIN_GROUPS = "train_groups.json"  # the discovered groups of the train prompts, in order, beside the fitted model
EVAL_STREAM = 1_000_003  # the held-out rows' random labels use seed + this: a permutation of their own


def random_labels(labels: list, seed: int) -> list:
    """``labels`` randomly permuted (seeded)."""
    shuffled = list(labels)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def merged_labels(labels: list) -> list[str]:
    """Each label replaced by its size-rank pair: ranks 0+1 -> "a|b", 2+3 -> "c|d", ... (ties by first appearance)."""
    by_size = [label for label, _ in Counter(labels).most_common()]
    pairs = [by_size[i : i + 2] for i in range(0, len(by_size), 2)]
    names = {label: "|".join(map(str, pair)) for pair in pairs for label in pair}
    return [names[label] for label in labels]


def discovery_directory(task: Task, group_column: str, seed: int) -> Path:
    """The k-means model of the train prompts' text, k = the number of task groups, fitted once and cached per task
    text and k, with the train prompts' groups beside it (so a cached call embeds nothing)."""
    from pgrpo.groups import GroupDiscovery

    prompts = list(task.train_dataset["prompt"])
    k = len(set(task.train_dataset[group_column]))

    def fit(directory: Path) -> None:
        discovery = GroupDiscovery("prompt", "text", num_groups=k, seed=seed).fit(task.train_dataset)
        discovery.save(directory)
        (directory / TRAIN_GROUPS).write_text(json.dumps(discovery.train_groups.tolist()))

    key = fingerprint({"prompts": fingerprint(prompts), "k": k, "seed": seed})
    return build_once(default_cache_dir() / f"groups-{task.name}-{key}", fit)


def discovered_labels(task: Task, group_column: str, seed: int) -> list[int]:
    """The discovered groups of the train prompts (:func:`discovery_directory`)."""
    return json.loads((discovery_directory(task, group_column, seed) / TRAIN_GROUPS).read_text())


def with_labels(task: Task, source: str, group_column: str, seed: int) -> tuple[Task, str]:
    """``task`` whose train, held-out and warm-start datasets have the labels of ``source`` in a new column (module
    docstring), and that column's name; the task itself for ``source="task"``."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"Unknown group_labels {source!r}; choose one of {', '.join(LABEL_SOURCES)}.")
    if source == "task":
        return task, group_column
    train = list(task.train_dataset[group_column])
    if source == "random":
        relabel = {"train": lambda labels: random_labels(labels, seed),
                   "eval": lambda labels: random_labels(labels, seed + EVAL_STREAM),
                   "sft": lambda labels: random_labels(labels, 0)}  # fmt: skip
    elif source == "merged":
        pairs = dict(zip(train, merged_labels(train), strict=True))
        relabel = dict.fromkeys(("train", "eval", "sft"), lambda labels: [pairs[label] for label in labels])
    else:  # one clustering per task, whatever the training seed
        from pgrpo.groups import GroupDiscovery

        model = GroupDiscovery.load(discovery_directory(task, group_column, seed=0))
        relabel = {"train": lambda _: discovered_labels(task, group_column, seed=0),
                   "eval": lambda _: model.assign(task.eval_dataset).tolist(),
                   "sft": lambda _: model.assign(task.sft_dataset).tolist()}  # fmt: skip
    column = LABEL_COLUMN.format(source=source)
    datasets = {"train": task.train_dataset, "eval": task.eval_dataset, "sft": task.sft_dataset}
    labelled = {  # warm-start pairs without groups (reviews, movielens) stay as they are
        name: data.add_column(column, relabel[name](list(data[group_column])))
        if data is not None and group_column in data.column_names
        else data
        for name, data in datasets.items()
    }
    replaced = dataclasses.replace(
        task, train_dataset=labelled["train"], eval_dataset=labelled["eval"], sft_dataset=labelled["sft"]
    )
    return replaced, column
