"""Build the ``reviews`` task: prompts per target rating, warm-start reviews and the reward."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from datasets import Dataset

from pgrpo.tasks.base import Task, register_task
from pgrpo.tasks.reviews.data import RATINGS, truncate_review, words
from pgrpo.tasks.reviews.rating_model import RatingModel, rating_model
from pgrpo.tasks.reviews.reward import SCORES, make_reward

# rating -> the instruction prompt conditioning gives its prompts (``group_prompt_template="{description}"``)
DESCRIPTIONS = {
    1: "Write a negative one-star review: the shopper is unhappy and says what went wrong.",
    2: "Write a two-star review: the shopper is mostly disappointed, with one small good point.",
    3: "Write a balanced three-star review: one thing the shopper liked and one thing they did not.",
    4: "Write a positive four-star review: the shopper likes this item, with one small complaint.",
    5: "Write a glowing, enthusiastic five-star review: the shopper loves this item.",
}


def review_prompt(category: str, rating: int) -> str:
    """The task prompt for a review of ``category`` that expresses ``rating`` stars."""
    return f"Category: {category}. Rating: {rating} of 5 stars. Review:"


def _draw(rng: np.random.Generator, index: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct entries of ``index`` (all of them if fewer), seeded."""
    return rng.choice(index, size=min(n, len(index)), replace=False)


def _prompts(frame: pd.DataFrame, chosen: np.ndarray, with_review: bool = False) -> Dataset:
    """One prompt per chosen review (in table order): its category and rating, the rating as the group; with
    ``with_review``, the review itself as ``reference_text`` (held-out real text for the capability probe)."""
    rows = frame.iloc[np.sort(chosen)]
    columns = {
        "prompt": [review_prompt(c, r) for c, r in zip(rows["category"], rows["rating"], strict=True)],
        "group": rows["rating"].tolist(),
        "target_rating": rows["rating"].tolist(),
    }
    return Dataset.from_dict(columns | ({"reference_text": rows["text"].tolist()} if with_review else {}))


def _eval_index(model: RatingModel, n_eval: int, balanced: bool, rng: np.random.Generator) -> np.ndarray:
    """Held-out reviews from the rating model's test split: ``n_eval`` split equally over the ratings, or drawn
    with their natural shares."""
    if not balanced:
        return _draw(rng, model.test_index, n_eval)
    ratings = model.reviews["rating"].to_numpy()[model.test_index]
    per_rating = np.diff(np.linspace(0, n_eval, len(RATINGS) + 1).round().astype(int))
    return np.concatenate(
        [_draw(rng, model.test_index[ratings == r], n) for r, n in zip(RATINGS, per_rating, strict=True)]
    )


def _warm_start_reviews(
    model: RatingModel, per_rating: int, max_words: int, min_words: int, rng: np.random.Generator
) -> Dataset:
    """Up to ``per_rating`` train reviews per rating, cut to ``max_words`` (those left with ``min_words``)."""
    pool = model.reviews.iloc[model.train_index]
    pool = pool.assign(short=pool["text"].map(lambda text: truncate_review(text, max_words)))
    pool = pool[pool["short"].map(lambda text: len(words(text)) >= min_words)]
    sft = pd.concat(
        [
            rows.iloc[np.sort(rng.choice(len(rows), size=min(per_rating, len(rows)), replace=False))]
            for _, rows in pool.groupby("rating")
        ]
    )
    return Dataset.from_dict(
        {
            "prompt": [review_prompt(c, r) for c, r in zip(sft["category"], sft["rating"], strict=True)],
            "completion": (" " + sft["short"]).tolist(),
        }
    )


def _describe(model: RatingModel, train: Dataset, score: str) -> str:
    shares = pd.Series(train["group"]).value_counts(normalize=True).sort_index()
    return (
        f"Review generation ({len(model.reviews)} real reviews): each prompt gives a product category and a target "
        f"star rating (the preference group), and the completion is the review. The reward is "
        f"{'1 - |E[rating] - target| / 4' if score == 'expected' else 'p(target rating)'} under a TF-IDF + "
        f"logistic-regression rating model (held-out accuracy {model.accuracy:.2f}, macro-F1 {model.macro_f1:.2f}), "
        f"times a quality factor that zeroes empty, short, repetitive, word-salad and gibberish text. "
        f"Train shares by rating: {'; '.join(f'{k}: {v:.0%}' for k, v in shares.items())}."
    )


@register_task("reviews")
def build(
    seed: int = 0,
    path: str | Path | None = None,
    category_field: str | None = None,
    test_fraction: float = 0.2,
    n_train: int = 2000,
    n_eval: int = 200,
    balanced_eval: bool = True,
    score: Literal["expected", "probability"] = "expected",
    min_words: int = 5,
    sft_per_rating: int = 300,
    sft_words: int = 24,
) -> Task:
    """Build the ``reviews`` task (:mod:`pgrpo.tasks.reviews`).

    path:            Goodreads-style JSON lines (``review_text``, ``rating``); ``None``: the wheel's clothing reviews.
    n_train:         RL prompts drawn (seeded, natural rating shares) from the rating model's train split.
    n_eval:          held-out prompts drawn (seeded) from its test split.
    balanced_eval:   n_eval split equally over the ratings (so every rating's held-out reward rests on as many
                     prompts), else drawn with the natural shares (then 1-star gets about 4%).
    score:           "expected" (closeness of the expected rating) or "probability" (of the target class).
    """
    config = dict(locals(), path=None if path is None else str(path))
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {', '.join(SCORES)}.")
    model = rating_model(None if path is None else str(path), seed, test_fraction, category_field)
    frame = model.reviews  # the table the model was made from, parsed once per process
    rng = np.random.default_rng(seed)
    train = _prompts(frame, _draw(rng, model.train_index, n_train))
    evaluation = _prompts(frame, _eval_index(model, n_eval, balanced_eval, rng), with_review=True)
    sft_dataset = _warm_start_reviews(model, sft_per_rating, sft_words, min_words, rng)
    config["rating_model"] = {"accuracy": model.accuracy, "macro_f1": model.macro_f1}
    return Task(
        name="reviews",
        description=_describe(model, train, score),
        train_dataset=train,
        eval_dataset=evaluation,
        reward_fn=make_reward(model, score, min_words),
        group_column="group",
        sft_dataset=sft_dataset,
        reward_range=(0.0, 1.0),
        config=config,
        group_descriptions={str(rating): text for rating, text in DESCRIPTIONS.items()},
    )
