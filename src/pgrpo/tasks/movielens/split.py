"""The per-user time split: what a user had watched when the recommendation is asked for, and what came later.

Every user's ratings are sorted by (timestamp, movie_id). The recommendation is asked for right
after the user's ``n_history``-th rating of a catalogue movie: the history is every rating up to
and including that one (it shapes the taste profile, and its ``n_history`` catalogue titles are
all shown in the prompt, so "already watched" is visible to the policy), and the held-out
targets are all of the user's later catalogue ratings. Users with fewer than ``min_heldout``
later catalogue ratings are dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def time_split(
    ratings: pd.DataFrame, catalogue_ids: set[int], n_history: int, min_heldout: int
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """(eligible user ids sorted, history rows, target rows) of the module docstring.

    Rows keep user_id, movie_id, rating, timestamp and ``in_catalogue``, sorted by (user_id, timestamp, movie_id).
    """
    ratings = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable").reset_index(drop=True)
    ratings["in_catalogue"] = ratings["movie_id"].isin(catalogue_ids)
    n_catalogue = ratings.groupby("user_id")["in_catalogue"].transform("sum")
    ratings = ratings[n_catalogue >= n_history + min_heldout].copy()
    catalogue_before = ratings.groupby("user_id")["in_catalogue"].cumsum() - ratings["in_catalogue"]
    in_history = catalogue_before < n_history
    return np.unique(ratings["user_id"]), ratings[in_history], ratings[~in_history & ratings["in_catalogue"]]
