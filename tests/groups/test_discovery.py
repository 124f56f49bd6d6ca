"""GroupDiscovery on numeric user profiles (MovieLens-100k users): structure recovery, save/load, cold start, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from pgrpo.groups import GroupDiscovery, with_groups

PROFILE = ["age", "mean_rating_time"]


@pytest.fixture(scope="module")
def students_and_retired(movielens_users: pd.DataFrame) -> pd.DataFrame:
    """196 students (age 7-42) and 14 retired users (age 51-73): a known two-group structure."""
    return movielens_users[movielens_users["occupation"].isin(["student", "retired"])].reset_index(drop=True)


def test_standardized_kmeans_recovers_students_and_retired_users(students_and_retired: pd.DataFrame) -> None:
    # Ages do not overlap (students <= 42 < 51 <= retired), so a split on age scores ARI 1; the mean rating time
    # (seconds, spread ~5e6) carries no occupation signal. Standardized, age still separates the two groups (ARI
    # 0.96 measured: one student among the retired); 0.8 leaves room for a few misplaced users.
    discovery = GroupDiscovery(PROFILE, kind="numeric", num_groups=2).fit(students_and_retired)
    occupation = students_and_retired["occupation"]
    assert adjusted_rand_score(occupation, discovery.train_groups) > 0.8
    # Group 0 is the largest cluster: the students.
    assert discovery.sizes[0] > discovery.sizes[1]
    assert np.mean(discovery.train_groups[occupation == "student"] == 0) > 0.95
    # Without standardization (the mistake the scaler prevents) the seconds dominate and the structure is lost.
    unscaled = KMeans(2, n_init=10, random_state=0).fit_predict(students_and_retired[PROFILE].to_numpy(float))
    assert adjusted_rand_score(occupation, unscaled) < 0.1


def test_automatic_number_of_groups_finds_the_two_occupations(students_and_retired: pd.DataFrame) -> None:
    discovery = GroupDiscovery(PROFILE, kind="numeric", num_groups=0, max_groups=6).fit(students_and_retired)
    assert sorted(discovery.silhouette_by_k) == [2, 3, 4, 5, 6]
    assert len(discovery.sizes) == 2 and discovery.silhouette == max(discovery.silhouette_by_k.values())
    assert adjusted_rand_score(students_and_retired["occupation"], discovery.train_groups) > 0.8


def test_save_load_assign_reproduces_the_fit_labels_exactly(movielens_users: pd.DataFrame, tmp_path: Path) -> None:
    discovery = GroupDiscovery(PROFILE, kind="numeric", num_groups=4, seed=3).fit(movielens_users)
    discovery.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "groups.json").read_text())
    assert config["kind"] == "numeric" and config["features"] == PROFILE and config["fit"]["sizes"] == discovery.sizes
    loaded = GroupDiscovery.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.assign(movielens_users), discovery.train_groups)
    np.testing.assert_array_equal(loaded.centroids, discovery.centroids)
    assert discovery.sizes == sorted(discovery.sizes, reverse=True) == np.bincount(discovery.train_groups).tolist()


def test_cold_start_users_get_the_nearest_centroid_in_training_units(movielens_users: pd.DataFrame) -> None:
    held_out = movielens_users["user_id"] % 5 == 0
    train, new_users = movielens_users[~held_out], movielens_users[held_out]
    discovery = GroupDiscovery(PROFILE, kind="numeric", num_groups=3).fit(train)
    # Independent reference: standardize with the training mean and population std, then the closest centroid.
    reference_train = train[PROFILE].to_numpy(float)
    z = (new_users[PROFILE].to_numpy(float) - reference_train.mean(axis=0)) / reference_train.std(axis=0)
    distances = ((z[:, None, :] - discovery.centroids[None, :, :]) ** 2).sum(axis=-1)
    groups = discovery.assign(new_users)
    np.testing.assert_array_equal(groups, distances.argmin(axis=1))
    assert set(groups) == {0, 1, 2}


def test_with_groups_adds_a_column_to_datasets_and_dataframes_without_replacing_one(
    students_and_retired: pd.DataFrame,
) -> None:
    discovery = GroupDiscovery(["age"], kind="numeric", num_groups=2, group_column="cohort").fit(students_and_retired)
    dataset = Dataset.from_pandas(students_and_retired[["user_id", "age"]])
    labelled = discovery.add_groups(dataset)
    assert labelled.column_names == ["user_id", "age", "cohort"]
    assert labelled["cohort"] == discovery.train_groups.tolist()
    frame = discovery.add_groups(students_and_retired)
    assert "cohort" not in students_and_retired.columns  # a copy, the input is untouched
    np.testing.assert_array_equal(frame["cohort"].to_numpy(), discovery.train_groups)
    with pytest.raises(ValueError, match="already has a column 'cohort'"):
        discovery.add_groups(labelled)
    flipped = with_groups(labelled, 1 - discovery.train_groups, "cohort", overwrite=True)
    assert flipped["cohort"] == (1 - discovery.train_groups).tolist()


def test_bad_input_is_refused_with_the_fix(students_and_retired: pd.DataFrame) -> None:
    users = students_and_retired
    with pytest.raises(ValueError, match=r"no column\(s\) \['salary'\]"):
        GroupDiscovery(["age", "salary"], kind="numeric", num_groups=2).fit(users)
    with pytest.raises(ValueError, match="Unknown kind 'categorical'"):
        GroupDiscovery(["occupation"], kind="categorical")
    with pytest.raises(ValueError, match="num_groups=20 but the data has only 12 rows"):
        GroupDiscovery(["age"], kind="numeric", num_groups=20).fit(users.head(12))
    with pytest.raises(ValueError, match=r"'occupation' has 210 missing, infinite or non-numeric.*get_dummies"):
        GroupDiscovery(["occupation"], kind="numeric", num_groups=2).fit(users)
    with pytest.raises(ValueError, match="kind='text' embeds one column"):
        GroupDiscovery(["occupation", "gender"], kind="text")
    with pytest.raises(ValueError, match="not fitted"):
        GroupDiscovery(["age"], kind="numeric").assign(users)
    with_missing_age = users.assign(age=users["age"].astype(float).where(users.index != 5))
    with pytest.raises(ValueError, match=r"'age' has 1 missing.*first: row 5"):
        GroupDiscovery(["age"], kind="numeric", num_groups=2).fit(with_missing_age)


def test_an_existing_model_directory_is_never_overwritten_silently(
    students_and_retired: pd.DataFrame, tmp_path: Path
) -> None:
    first = GroupDiscovery(["age"], kind="numeric", num_groups=2).fit(students_and_retired).save(tmp_path / "model")
    before = (first / "groups.json").read_text()
    second = GroupDiscovery(PROFILE, kind="numeric", num_groups=3).fit(students_and_retired)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        second.save(first)
    assert (first / "groups.json").read_text() == before
    second.save(first, overwrite=True)
    assert GroupDiscovery.load(first).features == PROFILE
