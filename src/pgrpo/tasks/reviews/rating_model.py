"""The rating model that judges reviews: TF-IDF + logistic regression over star ratings.

TF-IDF (words and bigrams, sublinear tf) + multinomial logistic regression with balanced class
weights, fitted on a seeded, rating-stratified ``1 - test_fraction`` of the reviews; accuracy and
macro-F1 on the rest are kept with it. Fitted models are cached in-process per (path, seed,
test_fraction, category_field).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from pgrpo.tasks.reviews.data import RATINGS, load_reviews, words


@dataclass(frozen=True)
class RatingModel:
    """TF-IDF + logistic regression over star ratings, with its held-out metrics and word list.

    ``reviews`` is the ``load_reviews(...)`` table it was made from (shared by every task built on this model:
    read it, never change it); ``train_index`` / ``test_index`` are its rows the model was fitted and scored on.
    """

    vectorizer: TfidfVectorizer
    classifier: LogisticRegression
    known_words: frozenset[str]
    accuracy: float
    macro_f1: float
    reviews: pd.DataFrame
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
        reviews=frame,
        train_index=np.sort(train_index),
        test_index=np.sort(test_index),
    )
