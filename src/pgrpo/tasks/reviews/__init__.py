"""``reviews``: write a product review that expresses a given star rating; the rating is the group.

Data (:mod:`.data`): the wheel's clothing reviews or a Goodreads-style JSON-lines file.
Group: the target rating, an ``int`` in 1..5, also stored as the column ``target_rating`` that
the reward reads (so shuffling the group column for an ablation leaves the reward intact).
Prompt: ``"Category: Dresses. Rating: 4 of 5 stars. Review:"``; completion: the review text.

Reward (:mod:`.reward`): closeness of the rating a TF-IDF + logistic-regression rating model
(:mod:`.rating_model`, held-out accuracy and macro-F1 in ``config["rating_model"]`` and the
description) reads in the text to the target, times a quality factor against degenerate text.

Splits: RL prompts are ``n_train`` rows drawn from the rating model's train split, keeping the
natural (imbalanced) rating distribution, and ``n_eval`` from its test split, equally many per rating
(``balanced_eval=True``, the default) or at the natural shares. ``sft_dataset``:
up to ``sft_per_rating`` train-split reviews per rating, cut at a sentence end to at most
``sft_words`` words (a hard cut when the first sentence is longer).
"""

from pgrpo.tasks.reviews.builder import build, review_prompt
from pgrpo.tasks.reviews.data import RATINGS, load_reviews, truncate_review, words
from pgrpo.tasks.reviews.rating_model import RatingModel, rating_model
from pgrpo.tasks.reviews.reward import SCORES, make_reward, text_quality

__all__ = [
    "RATINGS",
    "SCORES",
    "RatingModel",
    "build",
    "load_reviews",
    "make_reward",
    "rating_model",
    "review_prompt",
    "text_quality",
    "truncate_review",
    "words",
]
