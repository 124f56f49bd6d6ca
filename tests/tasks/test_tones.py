"""The ``tones`` task: shoppers who want differently toned reviews of the same request (real reviews, offline)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from pgrpo.core.conditioning import PromptConditioning
from pgrpo.tasks import build_task
from pgrpo.tasks.base import Task
from pgrpo.tasks.reviews.reward import copied
from pgrpo.tasks.tones import TONES, build, group_counts

TARGET = {group: rating for group, (rating, _, _) in TONES.items()}


@pytest.fixture(scope="module")
def task() -> Task:
    return build(seed=0)


def rewards(task: Task, texts: list[Any], group: str, prompt: Any = "Write a review of my coat.") -> np.ndarray:
    targets = [TARGET[group]] * len(texts)
    return np.asarray(task.reward_fn(prompts=[prompt] * len(texts), completions=texts, target_rating=targets), float)


def test_groups_have_their_shares_and_the_minority_is_under_ten_percent(task: Task) -> None:
    shares = {info.name: info.share for info in task.groups}
    assert shares == pytest.approx({"delighted": 0.62, "mixed": 0.30, "disappointed": 0.08})
    assert Counter(task.eval_dataset["group"]) == {"delighted": 40, "mixed": 40, "disappointed": 40}  # balanced
    assert group_counts(7, {"a": 0.5, "b": 0.4, "c": 0.1}) == {"a": 3, "b": 3, "c": 1}  # 3.5, 2.8, 0.7 (at least 1)
    assert build_task("tones", seed=0).train_dataset.to_list() == task.train_dataset.to_list()  # seeded
    assert build_task("tones", seed=1).train_dataset.to_list() != task.train_dataset.to_list()


def test_the_prompt_never_says_who_asks(task: Task) -> None:
    by_group: dict[str, set[str]] = {}
    for row in task.train_dataset:
        by_group.setdefault(row["group"], set()).add(row["prompt"])
        assert not any(word in row["prompt"].lower() for word in ("star", "delighted", "disappointed", "mixed"))
    common = set.intersection(*by_group.values())
    assert len(common) >= 10  # the very same requests come from every group


def test_real_reviews_score_highest_for_the_group_whose_rating_they_have(task: Task) -> None:
    texts = {group: [row["reference_text"] for row in task.eval_dataset if row["group"] == group] for group in TARGET}
    for group in TARGET:  # the rating model was fitted on other reviews than these held-out ones
        own = rewards(task, texts[group], group).mean()
        others = [rewards(task, texts[other], group).mean() for other in TARGET if other != group]
        assert own > max(others) + 0.05, (group, own, others)


def test_degenerate_text_and_a_copied_description_score_nothing(task: Task) -> None:
    description = TONES["disappointed"][2]
    conditioned = PromptConditioning("{description}", {"disappointed": description}, role="user").apply(
        [{"role": "user", "content": "Write a review of my coat."}], "disappointed"
    )
    review = "This coat is terrible. The fabric is cheap and the zipper broke after one week."
    assert rewards(task, [review], "disappointed", conditioned)[0] > 0.8
    assert rewards(task, [description, f"{description} {review}"], "disappointed", conditioned).max() < 0.3
    assert rewards(task, ["awful awful terrible worst bad awful terrible", "", "bad"], "disappointed").max() == 0.0
    assert copied("the zipper broke on my new coat", "my new coat is here") == pytest.approx(1 / 5)


def test_every_group_has_a_description_for_prompt_conditioning(task: Task) -> None:
    assert set(task.group_descriptions) == set(TARGET)
    assert len(set(task.group_descriptions.values())) == len(TARGET)


def test_unknown_groups_in_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="positive share to groups among"):
        build(shares={"delighted": 0.9, "angry": 0.1})
