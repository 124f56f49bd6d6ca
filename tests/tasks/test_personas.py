"""The personas task: deterministic data, imbalanced groups, a preference reward that resists hacks, knobs."""

from __future__ import annotations

import numpy as np
import pytest

from pgrpo.tasks import build_task, task_from_dataset
from pgrpo.tasks.personas import GENRES, PERSONAS, STYLES, TEMPLATES, score

NAMES = [persona.name for persona in PERSONAS]


def answer(genre: str, style: str, artist: int = 0, term: int = 0, template: int = 0) -> str:
    """A templated answer about ``genre`` in ``style``, as the SFT data writes them."""
    g = GENRES[genre]
    return TEMPLATES[style][template].format(g=g.name, t=g.terms[term], a=g.artists[artist].title())


def rewards(task, completions: list, groups: list[str]) -> list[float]:
    """Call the reward the way TRL does: prompts, completions, completion_ids and every dataset column."""
    return task.reward_fn(
        prompts=["Someone asks: music?"] * len(completions),
        completions=completions,
        completion_ids=[[0]] * len(completions),
        group=groups,
        trainer_state=None,
    )


@pytest.fixture(scope="module")
def task():
    return build_task("personas", seed=0)


def test_build_is_deterministic_and_seeded(task) -> None:
    again = build_task("personas", seed=0)
    other = build_task("personas", seed=1)
    for split in ("train_dataset", "eval_dataset", "sft_dataset"):
        assert getattr(task, split).to_dict() == getattr(again, split).to_dict()
        assert getattr(task, split).to_dict() != getattr(other, split).to_dict()
    assert task.config == again.config


def test_groups_have_documented_imbalanced_sizes(task) -> None:
    sizes = {group.name: group.size for group in task.groups}
    assert sizes == {"eleanor": 800, "jamal": 400, "sofia": 300, "hank": 200, "iris": 140, "ravi": 80, "kemar": 80}
    shares = sorted(group.share for group in task.groups)
    assert shares[-1] >= 0.4 and sum(share <= 0.05 for share in shares) >= 2
    assert all(isinstance(label, str) for label in task.train_dataset["group"])
    eval_sizes = {name: list(task.eval_dataset["group"]).count(name) for name in NAMES}
    assert eval_sizes == dict.fromkeys(NAMES, 30)
    assert set(task.train_dataset.column_names) == {"prompt", "group"}
    assert set(task.sft_dataset.column_names) == {"prompt", "group", "completion"}
    assert {name: list(task.sft_dataset["group"]).count(name) for name in NAMES} == dict.fromkeys(NAMES, 200)
    for prompt, group in zip(task.train_dataset["prompt"][:50], task.train_dataset["group"][:50], strict=True):
        assert prompt.startswith(group.capitalize() + ", ") and " asks: " in prompt


def test_custom_shares_and_errors() -> None:
    task = build_task("personas", num_train=100, num_eval=14, shares=(1, 1, 1, 1, 1, 1, 4), balanced_eval=False)
    assert {g.name: g.size for g in task.groups}["kemar"] == 40 and len(task.eval_dataset) == 14
    with pytest.raises(ValueError, match="shares needs one positive number or 7"):
        build_task("personas", shares=(0.5, 0.5))
    with pytest.raises(ValueError, match="leave a persona without rows"):
        build_task("personas", num_train=10)
    with pytest.raises(ValueError, match="reward_noise"):
        build_task("personas", reward_noise=-1.0)


def test_sft_completions_are_short_and_mostly_on_preference(task) -> None:
    lengths = [len(text.split()) for text in task.sft_dataset["completion"]]
    assert min(lengths) >= 8 and max(lengths) <= 25
    scores = rewards(task, list(task.sft_dataset["completion"]), list(task.sft_dataset["group"]))
    assert 0.4 < float(np.mean(scores)) < 0.9  # sft_preference=0.5: on-topic, partly personalised
    pure = build_task("personas", num_sft=70, sft_preference=1.0)
    assert min(rewards(pure, list(pure.sft_dataset["completion"]), list(pure.sft_dataset["group"]))) == 1.0


@pytest.mark.parametrize("persona", PERSONAS, ids=NAMES)
def test_on_preference_beats_every_off_preference(task, persona) -> None:
    on = [answer(persona.genre, persona.style, artist=i, term=i % 4, template=i % 4) for i in range(4)]
    off_genre = [answer(genre, persona.style) for genre in GENRES if genre != persona.genre]
    off_style = [answer(persona.genre, style) for style in STYLES if style != persona.style]
    off_both = [answer(genre, style) for genre in GENRES for style in STYLES
                if genre != persona.genre and style != persona.style]  # fmt: skip
    texts = on + off_genre + off_style + off_both
    values = rewards(task, texts, [persona.name] * len(texts))
    assert all(0.0 <= value <= 1.0 for value in values)
    on_values, off_values = values[: len(on)], values[len(on) :]
    assert min(on_values) == 1.0
    assert max(off_values) <= 0.5
    assert max(values[len(on) + len(off_genre) + len(off_style) :]) == 0.0


def test_conversational_and_free_text_completions(task) -> None:
    text = "Certainly. I would recommend Beethoven's ninth symphony, a refined piece of classical music for tonight."
    plain, chat = rewards(task, [text, [{"role": "assistant", "content": text}]], ["eleanor", "eleanor"])
    assert plain == chat == 1.0
    prose = (
        "Hey! For your road trip, check out Kendrick Lamar. His hip-hop albums are full of sharp rhymes "
        "and heavy beats, and the vibes are really chill for long stretches of highway."
    )
    assert rewards(task, [prose] * 2, ["jamal", "eleanor"]) == [1.0, 0.0]


HACKS = {
    "empty": "",
    "whitespace": "   \n ",
    "too short": "Certainly, Mozart.",
    "one keyword repeated": "mozart " * 40,
    "answer repeated": " ".join([answer("classical", "formal")] * 4),
    "keyword list": "certainly indeed refined esteemed mozart bach chopin symphony sonata classical opera",
    "every genre": answer("classical", "formal") + " Also jazz, rock, hip hop, electronic, country and reggae.",
    "every style": answer("classical", "formal") + " Hey wow, haha, I remember the tempo and moonlight.",
    "too long": answer("classical", "formal") + " " + " ".join(f"word{i}" for i in range(120)),
}


@pytest.mark.parametrize("hack", list(HACKS), ids=list(HACKS))
def test_hacks_do_not_pay(task, hack) -> None:
    honest, hacked = rewards(task, [answer("classical", "formal"), HACKS[hack]], ["eleanor", "eleanor"])
    assert honest == 1.0
    assert 0.0 <= hacked < 0.55, score(HACKS[hack], "eleanor")  # at most the half (genre or style) left alone


def test_reward_scale_noise_and_binary() -> None:
    texts = [answer(p.genre, p.style) for p in PERSONAS] + [answer("rock", "formal"), "jazz"]
    groups = [*NAMES, "eleanor", "eleanor"]
    base = np.array(rewards(build_task("personas"), texts, groups))

    scales = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5)
    scaled_task = build_task("personas", reward_scale=scales)
    scaled = np.array(rewards(scaled_task, texts, groups))
    np.testing.assert_allclose(scaled, base * np.array([*scales, 2.0, 2.0]))
    assert scaled_task.reward_range == (0.0, 2.0)

    noisy_a, noisy_b = build_task("personas", reward_noise=0.1), build_task("personas", reward_noise=0.1)
    first = [rewards(noisy_a, texts, groups) for _ in range(3)]
    assert first == [rewards(noisy_b, texts, groups) for _ in range(3)]  # same seed, same calls: same noise
    assert first[0] != first[1]  # fresh noise on every call
    noise = np.array(first) - base
    assert 0.02 < noise.std() < 0.2 and np.abs(noise).max() <= 0.4
    low, high = noisy_a.reward_range
    assert low <= np.min(first) and np.max(first) <= high
    assert rewards(build_task("personas", seed=1, reward_noise=0.1), texts, groups) != first[0]

    binary = rewards(build_task("personas", binary=True), texts, groups)
    assert binary == [1.0] * 7 + [0.0, 0.0]


def test_reward_errors_name_the_fix(task) -> None:
    with pytest.raises(ValueError, match="needs the 'group' column"):
        task.reward_fn(prompts=["p"], completions=["c"])
    with pytest.raises(ValueError, match="Unknown persona 'bob'"):
        rewards(task, ["some text"], ["bob"])


def test_task_from_dataset_keeps_str_labels_and_stratifies(task) -> None:
    custom = task_from_dataset(task.train_dataset, task.reward_fn, eval_fraction=0.1, seed=3)
    again = task_from_dataset(task.train_dataset, task.reward_fn, eval_fraction=0.1, seed=3)
    assert custom.eval_dataset.to_dict() == again.eval_dataset.to_dict()
    assert custom.eval_dataset.features["group"].dtype == "string"
    eval_sizes = {name: list(custom.eval_dataset["group"]).count(name) for name in NAMES}
    assert eval_sizes == {"eleanor": 80, "jamal": 40, "sofia": 30, "hank": 20, "iris": 14, "ravi": 8, "kemar": 8}
    assert len(custom.train_dataset) + len(custom.eval_dataset) == len(task.train_dataset)
