"""The review reward: how well a text expresses the target rating, times a guard against degenerate text.

Reward of a completion c for target rating y (range [0, 1]), with p(k | c) the rating model's
class probabilities and E = sum_k k p(k | c):

    score   = 1 - |E - y| / 4                      (score="expected", the default)
            = p(y | c)                             (score="probability")
    R       = quality(c) * score * guard(c, x)

quality(c) guards against degenerate text, over the lowercase words w_1..w_n of c:
    0 if n < min_words (empty or too short), else the product of
    ramp(distinct words / n;   0.25 -> 0.5)        repetition ("love love love ...")
    ramp(stopword fraction;    0    -> 0.2)        word salad ("great perfect gorgeous ...")
    ramp(known-word fraction;  0.5  -> 0.9)        gibberish (known = seen twice in the reviews)
where ramp(x; a -> b) = clip((x - a) / (b - a), 0, 1). Real reviews almost always get quality 1.
Text without sentiment reads as about 3 stars (E near 3), so it scores well for target 3 only.

guard(c, x) = 1 - ramp(copied(c, x); 0.2 -> 0.5) keeps the prompt x (as the policy read it: with prompt
conditioning, the group's description, e.g. "Write a negative one-star review ...") from being copied into a review,
where copied(c, x) is the share of the completion's word trigrams that occur in the prompt. Real reviews copy none.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from pgrpo.tasks.base import RewardFunction, completion_text
from pgrpo.tasks.reviews.data import words
from pgrpo.tasks.reviews.rating_model import RatingModel

SCORES = ("expected", "probability")


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


def trigrams(text: str) -> set[tuple[str, ...]]:
    tokens = words(text)
    return set(zip(tokens, tokens[1:], tokens[2:], strict=False))


def copied(completion: str, prompt: str) -> float:
    """Share of the completion's word trigrams that occur in the prompt (0 when it has none)."""
    own = trigrams(completion)
    return len(own & trigrams(prompt)) / len(own) if own else 0.0


def make_reward(
    model: RatingModel, score: Literal["expected", "probability"] = "expected", min_words: int = 5
) -> RewardFunction:
    """The review reward R = quality(c) * score(c, y) * guard(c, x) of the module docstring; reads
    ``target_rating`` and the prompts."""
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
        guards = [1.0 - _ramp(copied(t, completion_text(p)), 0.2, 0.5) for t, p in zip(texts, prompts, strict=True)]
        return [
            text_quality(t, model.known_words, min_words) * float(s) * guard
            for t, s, guard in zip(texts, scores, guards, strict=True)
        ]

    return reviews_reward
