"""The MovieLens reward of a recommended title.

Reward of a completion c for user u (range [0, 1]). Catalogue titles are found in c by longest
match over normalized words (:class:`TitleMatcher`; year, article and case optional). With m
the first title found:

    q    = words(m) / words(c)                    1 for exactly one title, less for repeats,
                                                   lists of titles or extra text
    base = (r_um - 1) / 4                          u rated m after the prompt's time (held out), r_um in 1..5
         = 0                                       m is in u's history (every such title is in the prompt)
         = affinity_weight * a_u(m)                otherwise: u never rated m; genre affinity, min-max
                                                   scaled over the catalogue (:mod:`.taste`)
    R    = base * q,          R = 0 when c names no catalogue title.

The observed rating wins where there is one; the taste estimate fills in the movies u never
rated. With ``affinity_weight`` 1 a never-rated movie of u's favourite genres is worth a real
5-star rating and the worst genre match in the catalogue is worth nothing. ``binary=True``:
R = 1 when c is exactly one title (q = 1) that u rated >= ``like_threshold`` later, else 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pgrpo.tasks.base import RewardFunction, completion_text
from pgrpo.tasks.movielens.data import GENRES
from pgrpo.tasks.movielens.taste import genre_affinity
from pgrpo.tasks.movielens.titles import TitleMatcher


def make_reward(
    catalogue: pd.DataFrame, affinity_weight: float = 1.0, binary: bool = False, like_threshold: int = 4
) -> RewardFunction:
    """The MovieLens reward (module docstring) over ``catalogue`` (movie_id, title, ``GENRES`` columns).

    Reads the dataset columns ``heldout_ids``, ``heldout_ratings``, ``seen_ids`` and ``taste``.
    """
    matcher = TitleMatcher(catalogue["title"].tolist(), catalogue["movie_id"].tolist())
    flags = catalogue[list(GENRES)].to_numpy(dtype=np.float64)
    row_of = {int(movie_id): row for row, movie_id in enumerate(catalogue["movie_id"])}

    def movielens_reward(
        prompts: list[Any],
        completions: list[Any],
        heldout_ids: list[list[int]],
        heldout_ratings: list[list[int]],
        seen_ids: list[list[int]],
        taste: list[list[float]],
        **_: Any,
    ) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, held, ratings, seen, user_taste in zip(
            completions, heldout_ids, heldout_ratings, seen_ids, taste, strict=True
        ):
            ids, lengths, n_words = matcher.find(completion_text(completion))
            if not ids:
                rewards.append(0.0)
                continue
            movie, q = ids[0], lengths[0] / n_words
            rating = dict(zip(held, ratings, strict=True)).get(movie)
            if binary:
                rewards.append(float(rating is not None and rating >= like_threshold and q == 1.0))
            elif rating is not None:
                rewards.append((rating - 1) / 4 * q)
            elif movie in seen:
                rewards.append(0.0)
            else:
                affinity = genre_affinity(np.asarray(user_taste), flags)[row_of[movie]]
                rewards.append(float(affinity_weight * affinity * q))
        return rewards

    return movielens_reward
