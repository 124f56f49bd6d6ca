"""Users' genre taste, their affinity to movies, and user clusters.

Genre profile of user u (G genres, x_i in {0,1}^G the genres of movie i, r_i in 1..5): the
rating-weighted genre distribution of the rating mass of u's history

    p_u[g] = sum_{i in history} (r_i - 1) x_ig / |x_i|  /  sum_{i in history} (r_i - 1)

(1-star ratings count zero; a history of only 1-star ratings falls back to unweighted counts).
Drama and Comedy dominate every p_u, so taste is measured against the population mean profile
p_bar, smoothed by tau = 0.02:

    t_u[g] = (p_u[g] + tau) / (p_bar[g] + tau)          (> 1: likes g more than the average user)

Affinity of u to movie m, min-max scaled over the catalogue (0 for the catalogue movie that
matches u's taste worst, 1 for the best):

    s_u(m) = mean_{g in m} t_u[g],        a_u(m) = (s_u(m) - min_m' s_u(m')) / (max_m' s_u(m') - min_m' s_u(m'))

Clusters: KMeans on sqrt(p_u) (Hellinger geometry).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from pgrpo.tasks.movielens.data import GENRES

TASTE_SMOOTHING = 0.02  # tau of the module docstring


def genre_profiles(history: pd.DataFrame, genre_matrix: pd.DataFrame) -> pd.DataFrame:
    """Rating-weighted genre distributions p_u, (users, G) indexed by user_id (module docstring).

    history: rows of user_id, movie_id, rating; genre_matrix: movie_id-indexed 0/1 ``GENRES`` columns.
    """
    flags = genre_matrix.loc[history["movie_id"]].to_numpy(dtype=np.float64)
    flags /= np.maximum(flags.sum(axis=1, keepdims=True), 1.0)
    weight = (history["rating"].to_numpy() - 1.0)[:, None]
    sums = pd.DataFrame(np.hstack([flags * weight, flags]), index=history["user_id"].to_numpy()).groupby(level=0).sum()
    weighted, counts = np.hsplit(sums.to_numpy(), 2)
    total = weighted.sum(axis=1, keepdims=True)
    profile = np.where(total > 0, weighted / np.maximum(total, 1e-12), counts / counts.sum(axis=1, keepdims=True))
    return pd.DataFrame(profile, index=sums.index, columns=list(GENRES))


def genre_taste(profiles: pd.DataFrame) -> pd.DataFrame:
    """t_u = (p_u + tau) / (p_bar + tau), p_bar the mean of ``profiles`` over users (module docstring)."""
    return (profiles + TASTE_SMOOTHING) / (profiles.mean() + TASTE_SMOOTHING)


def genre_affinity(taste: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """a_u(m) of the module docstring, min-max scaled over the M catalogue movies; in [0, 1].

    taste: (G,) positive t_u; flags: (M, G) 0/1 genres of the catalogue movies (s_u = 0 for a genre-less one).
    Returns (M,): 0 for the worst-matching movies, 1 for the best-matching ones (all 0 if every s_u is equal).
    """
    score = (flags @ taste) / np.maximum(flags.sum(axis=1), 1.0)
    return (score - score.min()) / max(score.max() - score.min(), 1e-12)


def cluster_users(profiles: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """KMeans labels of sqrt(p_u), relabelled by cluster size (0 = largest; ties by first member)."""
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.sqrt(profiles.to_numpy()))
    order = pd.Series(labels).value_counts(sort=False).sort_values(ascending=False, kind="stable").index
    relabel = {int(old): new for new, old in enumerate(order)}
    return pd.Series([relabel[int(label)] for label in labels], index=profiles.index)
