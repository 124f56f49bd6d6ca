"""The personas task: deterministic data, imbalanced groups, a preference reward that resists hacks, knobs."""

from __future__ import annotations

import numpy as np
import pytest

from pgrpo.cli import main
from pgrpo.tasks import build_task, task_from_dataset
from pgrpo.tasks.personas import GENRES, PERSONAS, STYLES, TEMPLATES, score, shares_with

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
    with pytest.raises(ValueError, match=r"shares needs one share or 7 \(each >= 0, at least two > 0\)"):
        build_task("personas", shares=(0.5, 0.5))
    with pytest.raises(ValueError, match="at least two > 0"):
        build_task("personas", shares=(1, 0, 0, 0, 0, 0, 0))


def test_a_persona_with_share_zero_sends_no_prompts_and_the_held_out_set_balances_the_rest() -> None:
    task = build_task("personas", num_train=100, num_eval=20, shares=(0.9, 0, 0, 0, 0, 0, 0.1))
    assert {g.name: g.size for g in task.groups} == {"eleanor": 90, "kemar": 10}
    assert sorted(task.eval_dataset["group"]) == ["eleanor"] * 10 + ["kemar"] * 10
    assert len(set(task.sft_dataset["group"])) == 7  # the warm start still knows every persona
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


def test_sft_preference_per_persona_leaves_chosen_personas_behind() -> None:
    task = build_task("personas", num_sft=700, sft_preference=[1, 1, 1, 1, 1, 0, 0])
    sft = task.sft_dataset.to_pandas()
    sft["reward"] = rewards(task, list(sft["completion"]), list(sft["group"]))
    own = zip(sft["completion"], sft["group"], strict=True)
    sft["own_genre"] = [score(text, group)["genre"] > 0 for text, group in own]
    by_group = sft.groupby("group")
    assert (by_group["reward"].min()[NAMES[:5]] == 1.0).all()  # preference 1: every answer on-preference
    # preference 0: own genre only by the uniform draw over 7 (p = 1/7 of 100 answers each), both own 1/49
    assert by_group["own_genre"].mean()[["ravi", "kemar"]].between(0.05, 0.3).all()
    assert (by_group["reward"].apply(lambda r: (r == 1.0).mean())[["ravi", "kemar"]] <= 0.08).all()
    for bad in ([0.5] * 6, 1.5, [0.5] * 6 + [-0.1]):
        with pytest.raises(ValueError, match=r"sft_preference needs one probability or 7 \(order: eleanor, jamal"):
            build_task("personas", sft_preference=bad)


def test_anonymous_prompts_hide_the_persona_but_keep_the_groups(task) -> None:
    anonymous = build_task("personas", anonymous=True)
    for split in ("train_dataset", "eval_dataset", "sft_dataset"):
        named, hidden = getattr(task, split), getattr(anonymous, split)
        assert hidden["group"] == named["group"]  # same rows, same groups: only who is asking is hidden
        assert hidden["prompt"] == ["A listener asks: " + p.split(" asks: ", 1)[1] for p in named["prompt"]]
        assert not any(name in prompt.lower() for prompt in hidden["prompt"] for name in NAMES)
    prompts = anonymous.train_dataset.to_pandas().groupby("group")["prompt"].agg(set)
    assert len(set.union(*prompts)) == 6 * 12  # every request x occasion, whoever asks
    assert len(prompts["eleanor"] & prompts["kemar"]) > 30  # opposite wants, identical prompts
    described = build_task("personas", anonymous=True, describe_preferences=True)
    kemar = described.train_dataset["prompt"][described.train_dataset["group"].index("kemar")]
    assert kemar.startswith("A listener who loves reggae music and a humorous tone asks: ")


def test_shares_with_fixes_named_personas_and_rescales_the_rest() -> None:
    two_percent = [0.417391, 0.208696, 0.156522, 0.104348, 0.073043, 0.02, 0.02]  # 0.4 / 0.92 * 0.96, ...
    assert shares_with(ravi=0.02, kemar=0.02) == pytest.approx(two_percent, abs=1e-12)
    one_percent = shares_with(kemar=0.01)  # the others x 0.99 / 0.96
    assert one_percent == pytest.approx([0.4125, 0.20625, 0.1546875, 0.103125, 0.0721875, 0.04125, 0.01], abs=1e-6)
    sizes = {group.name: group.size for group in build_task("personas", shares=one_percent).groups}
    assert (sizes["kemar"], sizes["eleanor"]) == (20, 825)
    with pytest.raises(ValueError, match=r"Unknown persona.*bob"):
        shares_with(bob=0.1)
    with pytest.raises(ValueError, match="sum below 1"):
        shares_with(ravi=0.5, kemar=0.5)


def test_tasks_command_explains_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--task", "personas"]) == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert 'anonymous false prompts say "A listener asks: ..." instead of naming the persona' in listing
    assert "sft_preference 0.5 probability that an SFT completion's genre" in listing
    assert "or 7 in PERSONAS order (0 for a persona: its warm start rarely writes" in listing


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
