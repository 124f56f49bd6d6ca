"""The per-user time split: each user's history (what the prompt may show) and held-out targets.

Every user's ratings are sorted by (timestamp, movie_id); the last ``n_heldout`` ratings of
catalogue movies are the user's held-out targets, and only ratings before the first target (the
history) shape the prompt and the genre profile. Users with fewer than ``min_catalogue``
catalogue ratings are dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def time_split(
    ratings: pd.DataFrame, catalogue_ids: set[int], n_heldout: int, min_catalogue: int
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """(eligible user ids sorted, history rows, target rows) of the module docstring.

    Rows keep user_id, movie_id, rating, timestamp and ``in_catalogue``, sorted by (user_id, timestamp, movie_id).
    """
    ratings = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable").reset_index(drop=True)
    ratings["in_catalogue"] = ratings["movie_id"].isin(catalogue_ids)
    n_catalogue = ratings.groupby("user_id")["in_catalogue"].transform("sum")
    ratings = ratings[n_catalogue >= min_catalogue].copy()
    # 0 for a user's first catalogue rating, 1 for the second, ...; targets are the last n_heldout of them.
    rank = ratings.groupby("user_id")["in_catalogue"].cumsum() - 1
    is_target = ratings["in_catalogue"] & (rank >= n_catalogue[ratings.index] - n_heldout)
    after_first_target = is_target.groupby(ratings["user_id"]).cummax()
    return np.unique(ratings["user_id"]), ratings[~after_first_target], ratings[is_target]
