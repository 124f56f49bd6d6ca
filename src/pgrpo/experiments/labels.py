"""Which preference-group labels a run normalizes and weights with: the label-quality comparison.

    task        the task's own groups (the default)
    random      the same labels randomly permuted over the prompts: sizes kept, meaning lost (the paper's ablation)
    merged      coarser groups: the task's groups ranked by size and paired (the two largest together, then the
                next two, ...), so half as many groups, each the union of two
    discovered  groups found without labels: k-means on the prompts' all-MiniLM-L6-v2 embeddings
                (``pgrpo.groups``), k = the task's number of groups, fitted once per task and cached

Only the labels the trainer reads change: the reward and the held-out evaluation keep the task's own
groups, so every label source is judged by the same per-group results.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from datasets import Dataset

from pgrpo.models.cache import build_once, default_cache_dir, fingerprint
from pgrpo.tasks import Task

LABEL_SOURCES = ("task", "random", "merged", "discovered")
LABEL_COLUMN = "labels_{source}"
TRAIN_GROUPS = "train_groups.json"  # the discovered groups of the train prompts, in order, beside the fitted model


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


def discovered_labels(task: Task, group_column: str, seed: int) -> list[int]:
    """k-means groups of the train prompts' text, k = the number of task groups (cached per task text and k: the
    fitted model and the train prompts' groups, so a cached call embeds nothing)."""
    from pgrpo.groups import GroupDiscovery

    prompts = list(task.train_dataset["prompt"])
    k = len(set(task.train_dataset[group_column]))

    def fit(directory: Path) -> None:
        discovery = GroupDiscovery("prompt", "text", num_groups=k, seed=seed).fit(task.train_dataset)
        discovery.save(directory)
        (directory / TRAIN_GROUPS).write_text(json.dumps(discovery.train_groups.tolist()))

    key = fingerprint({"prompts": fingerprint(prompts), "k": k, "seed": seed})
    directory = build_once(default_cache_dir() / f"groups-{task.name}-{key}", fit)
    return json.loads((directory / TRAIN_GROUPS).read_text())


def with_labels(task: Task, source: str, group_column: str, seed: int) -> tuple[Dataset, str]:
    """The train dataset with the labels of ``source`` in a new column, and that column's name."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"Unknown group_labels {source!r}; choose one of {', '.join(LABEL_SOURCES)}.")
    if source == "task":
        return task.train_dataset, group_column
    labels = list(task.train_dataset[group_column])
    if source == "random":
        new = random_labels(labels, seed)
    elif source == "merged":
        new = merged_labels(labels)
    else:
        new = discovered_labels(task, group_column, seed=0)  # one clustering per task, whatever the training seed
    column = LABEL_COLUMN.format(source=source)
    return task.train_dataset.add_column(column, new), column
