"""The task interface: a preference-grouped dataset plus a TRL reward function.

A :class:`Task` is everything a P-GRPO run needs besides the policy: train and held-out
``datasets.Dataset``s with a ``prompt`` column (plain text) and a preference-group column, a
reward function with TRL's signature that reads the group (and any other column it needs)
from its keyword arguments, group metadata, and text for building and warm-starting a tiny
policy. Tasks are registered by name (:func:`register_task`) and built deterministically from a
seed with ``pgrpo.tasks.build_task("personas", seed=0)`` (``pgrpo.tasks.registry``, which also
finds tasks in installed packages, modules and files).

Bring your own data with :func:`task_from_dataset`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

from pgrpo.core.conditioning import check_descriptions
from pgrpo.core.labels import check_labels

RewardFunction = Callable[..., list[float | None]]
TaskBuilder = Callable[..., "Task"]
TASKS: dict[str, TaskBuilder] = {}


@dataclass(frozen=True)
class GroupInfo:
    """One preference group of a task: its label, train-set size and share of the train set."""

    name: str | int
    size: int
    share: float


@dataclass
class Task:
    """A preference-grouped RL task (see the module docstring).

    name:          registry name.
    description:   one paragraph for reports and ``--help``.
    train_dataset: rows with ``prompt`` (str) and ``group_column``; extra columns reach the reward.
    eval_dataset:  held-out rows, same columns, and optionally ``reference_text``: real text answering the row's
                   prompt that training never shows the policy (the capability probe's held-out text).
    reward_fn:     TRL reward callable ``f(prompts, completions, **columns) -> list[float | None]``.
    group_column:  name of the preference-group column.
    sft_dataset:   ``prompt``/``completion`` pairs of on-preference text for a warm start (may be None).
    reward_range:  (low, high) bounds every reward lies in.
    config:        the arguments the task was built with (for run directories and caching).
    group_descriptions: {str(label): text} describing each group, which prompt conditioning puts into its prompts
                   (``PGRPOConfig.group_conditioning="prompt"``); a group without one is described by its label.
    """

    name: str
    description: str
    train_dataset: Dataset
    eval_dataset: Dataset
    reward_fn: RewardFunction
    group_column: str = "group"
    sft_dataset: Dataset | None = None
    reward_range: tuple[float, float] = (0.0, 1.0)
    config: dict[str, Any] = field(default_factory=dict)
    group_descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def groups(self) -> list[GroupInfo]:
        """Train-set groups, largest first."""
        counts = Counter(self.train_dataset[self.group_column])
        total = sum(counts.values())
        return [GroupInfo(name, size, size / total) for name, size in counts.most_common()]

    def corpus(self) -> list[str]:
        """All task text (prompts and warm-start completions), for building a tokenizer."""
        texts = list(self.train_dataset["prompt"]) + list(self.eval_dataset["prompt"])
        if self.sft_dataset is not None:
            texts += [p + c for p, c in zip(self.sft_dataset["prompt"], self.sft_dataset["completion"], strict=True)]
        return texts


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Register a task builder ``fn(seed: int = 0, **options) -> Task`` under ``name``."""

    def decorate(builder: TaskBuilder) -> TaskBuilder:
        if name in TASKS:
            raise ValueError(f"A task named {name!r} is already registered.")
        TASKS[name] = builder
        return builder

    return decorate


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """The text of a TRL completion, plain (``str``) or conversational (``[{"role", "content"}]``)."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion)


def task_from_dataset(
    train_dataset: Dataset,
    reward_fn: RewardFunction,
    group_column: str = "group",
    eval_dataset: Dataset | None = None,
    sft_dataset: Dataset | None = None,
    name: str = "custom",
    description: str = "A user-supplied task.",
    eval_fraction: float = 0.1,
    seed: int = 0,
    reward_range: tuple[float, float] = (0.0, 1.0),
    group_descriptions: dict[str, str] | None = None,
) -> Task:
    """Turn any dataset with a ``prompt`` and a group column plus any reward callable into a Task.

    ``group_descriptions``: {label: text} that prompt conditioning puts into each group's prompts (labels compared as
    ``str``; a label the data do not have is an error that lists the data's labels).

    Without ``eval_dataset``, a seeded ``eval_fraction`` of the rows is held out, stratified by
    group: a group of n >= 2 rows gives min(n - 1, max(1, round(eval_fraction * n))) rows to the
    eval set, a single-row group stays in train. Rows keep their order and labels their type.
    """
    missing = [column for column in ("prompt", group_column) if column not in train_dataset.column_names]
    if missing:
        raise ValueError(
            f"Dataset lacks column(s) {missing}; it has {train_dataset.column_names}. "
            "A task needs a 'prompt' column and the preference-group column named by group_column."
        )
    try:
        check_labels(train_dataset[group_column])
    except ValueError as error:
        raise ValueError(f"Dataset column {group_column!r}: {error}") from None
    if sft_dataset is not None:
        missing = [column for column in ("prompt", "completion") if column not in sft_dataset.column_names]
        if missing:
            raise ValueError(
                f"sft_dataset lacks column(s) {missing}; it has {sft_dataset.column_names}. Warm-start data are "
                "'prompt'/'completion' text pairs (the completion: what the policy should write after the prompt)."
            )
    descriptions = {str(label): text for label, text in (group_descriptions or {}).items()}
    check_descriptions(descriptions, list(train_dataset[group_column]), "the dataset")
    if eval_dataset is None:
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction!r}; e.g. 0.1.")
        train_dataset, eval_dataset = stratified_split(train_dataset, group_column, eval_fraction, seed)
    config = {"eval_fraction": eval_fraction, "seed": seed}
    return Task(
        name,
        description,
        train_dataset,
        eval_dataset,
        reward_fn,
        group_column,
        sft_dataset,
        reward_range,
        config,
        descriptions,
    )


def stratified_split(dataset: Dataset, group_column: str, eval_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded (train, eval) split of ``dataset`` stratified by ``group_column`` (see :func:`task_from_dataset`)."""
    rng = np.random.default_rng(seed)
    rows_by_group: dict[str | int, list[int]] = {}
    for row, label in enumerate(dataset[group_column]):
        rows_by_group.setdefault(label, []).append(row)
    eval_rows: list[int] = []
    for rows in rows_by_group.values():
        if len(rows) >= 2:
            take = min(len(rows) - 1, max(1, round(eval_fraction * len(rows))))
            eval_rows += rng.choice(rows, size=take, replace=False).tolist()
    held_out = set(eval_rows)
    train_rows = [row for row in range(len(dataset)) if row not in held_out]
    return dataset.select(train_rows), dataset.select(sorted(eval_rows))
