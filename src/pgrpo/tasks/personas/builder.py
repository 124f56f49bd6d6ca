"""Build the ``personas`` task: prompts, train / held-out splits, the warm-start data and the reward function.

``sft_dataset`` holds templated completions (about 10-25 words) for every persona in equal
numbers; each completion's genre and style are independently the persona's own with
probability ``sft_preference`` (one for all personas, or one each) and otherwise uniform over
all seven, so a warm-started policy writes valid, on-topic answers and leaves room for RL to
personalise them (1.0 makes every completion on-preference). A persona given 0 starts behind:
its own genre and style appear only by the uniform draw (1/7 each, both together 1/49), so RL
must find them.

``shares_with(kemar=0.01)`` gives train shares with the named personas fixed and the others
scaled from their defaults to fill the rest (the imbalance regimes of ``pgrpo bench``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasets import Dataset

from pgrpo.tasks.base import RewardFunction, Task, completion_text, register_task
from pgrpo.tasks.personas.reward import BINARY_THRESHOLD, NOISE_CLIP, score
from pgrpo.tasks.personas.world import BY_NAME, GENRES, OCCASIONS, PERSONAS, REQUESTS, STYLES, TEMPLATES, Persona


def _counts(shares: Sequence[float], total: int) -> list[int]:
    """Largest-remainder rounding of ``total * shares`` (shares normalised to sum 1)."""
    weights = np.asarray(shares, dtype=np.float64) / sum(shares)
    raw = weights * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[rng.integers(len(options))]


@dataclass(frozen=True)
class PromptStyle:
    """What a prompt says about who asks: their preferences (``describe``), and their name and bio (unless
    ``anonymous``)."""

    describe: bool = False
    anonymous: bool = False


def _prompt(persona: Persona, rng: np.random.Generator, style: PromptStyle) -> str:
    taste = f"who loves {GENRES[persona.genre].name} music and a {persona.style} tone" if style.describe else ""
    if style.anonymous:
        who = " ".join(filter(None, ["A listener", taste]))
    else:
        who = ", ".join(filter(None, [persona.name.capitalize(), persona.bio, taste])) + ","
    request = _pick(REQUESTS, rng).format(o=_pick(OCCASIONS, rng))
    return f"{who} asks: {request}"


def _rows(sizes: Sequence[int], rng: np.random.Generator, prompt_style: PromptStyle) -> dict[str, list[str]]:
    groups = [persona.name for persona, size in zip(PERSONAS, sizes, strict=True) for _ in range(size)]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    return {"prompt": [_prompt(BY_NAME[g], rng, prompt_style) for g in groups], "group": groups}


def _completion(genre: str, style: str, rng: np.random.Generator) -> str:
    """One templated answer (leading space: TRL concatenates prompt + completion) in ``style`` about ``genre``."""
    g = GENRES[genre]
    return " " + _pick(TEMPLATES[style], rng).format(g=g.name, t=_pick(g.terms, rng), a=_pick(g.artists, rng).title())


def _sft_rows(
    num_sft: int, preference: dict[str, float], rng: np.random.Generator, prompt_style: PromptStyle
) -> dict[str, list[str]]:
    """Warm-start pairs, equal numbers per persona; ``preference[name]``: P(genre is the persona's own), and
    independently P(style is)."""
    rows = _rows(_counts([1.0] * len(PERSONAS), num_sft), rng, prompt_style)
    completions = []
    for name in rows["group"]:
        persona = BY_NAME[name]
        genre = persona.genre if rng.random() < preference[name] else _pick(list(GENRES), rng)
        style = persona.style if rng.random() < preference[name] else _pick(list(STYLES), rng)
        completions.append(_completion(genre, style, rng))
    return {**rows, "completion": completions}


def _per_persona(
    value: Sequence[float] | float,
    what: str,
    kind: Literal["positive number", "probability", "share"] = "positive number",
) -> list[float]:
    """One ``kind`` per persona (> 0; in [0, 1]; or >= 0 with two or more > 0) from one number or a sequence in
    PERSONAS order."""
    values = [float(value)] * len(PERSONAS) if isinstance(value, int | float) else [float(v) for v in value]
    in_range = {"probability": lambda v: 0 <= v <= 1, "share": lambda v: v >= 0}.get(kind, lambda v: v > 0)
    valid = len(values) == len(PERSONAS) and all(math.isfinite(v) and in_range(v) for v in values)
    if not valid or (kind == "share" and sum(v > 0 for v in values) < 2):
        order = ", ".join(p.name for p in PERSONAS)
        rule = " (each >= 0, at least two > 0)" if kind == "share" else ""
        raise ValueError(f"{what} needs one {kind} or {len(PERSONAS)}{rule} (order: {order}), got {value!r}.")
    return values


def shares_with(**fixed: float) -> list[float]:
    """Train shares in PERSONAS order with the named personas at the given shares and the others scaled from
    their default shares to fill 1 - sum(fixed), rounded to 6 decimals: ``shares_with(ravi=0.02, kemar=0.02)``
    gives two 2% minorities, ``shares_with(kemar=0.01)`` one 1% persona."""
    if unknown := sorted(set(fixed) - set(BY_NAME)):
        raise ValueError(f"Unknown persona(s) {unknown}; the personas are {', '.join(BY_NAME)}.")
    if not all(share > 0 for share in fixed.values()) or sum(fixed.values()) >= 1:
        raise ValueError(f"Fixed shares must be positive and sum below 1, got {fixed}.")
    free = [p.share for p in PERSONAS if p.name not in fixed]
    scaled = iter((np.array(free) / sum(free) * (1 - sum(fixed.values()))).round(6).tolist())
    return [fixed[p.name] if p.name in fixed else next(scaled) for p in PERSONAS]


def _split_sizes(
    shares: Sequence[float], num_train: int, num_eval: int, balanced_eval: bool
) -> tuple[list[int], list[int]]:
    """Rows per persona in the train and held-out sets; every persona with a share > 0 needs at least one of each
    (a persona with share 0 sends no train or held-out prompts)."""
    present = [share > 0 for share in shares]
    train_sizes = _counts(shares, num_train)
    eval_sizes = _counts([float(p) for p in present] if balanced_eval else shares, num_eval)
    if any(size < 1 for sizes in (train_sizes, eval_sizes) for size, p in zip(sizes, present, strict=True) if p):
        raise ValueError(
            f"num_train={num_train} and num_eval={num_eval} leave a persona without rows "
            f"(train sizes {train_sizes}, eval sizes {eval_sizes}); raise them or the smallest shares."
        )
    return train_sizes, eval_sizes


def _make_reward(
    seed: int, scales: Sequence[float], reward_noise: float, binary: bool, min_words: int, max_words: int
) -> RewardFunction:
    """The task's TRL reward: :func:`.reward.score` (or its binary cut) x the persona's scale, + clipped noise."""
    scale_of = {persona.name: scale for persona, scale in zip(PERSONAS, scales, strict=True)}
    noise_rng = np.random.default_rng([seed, 2])

    def personas_reward(prompts: list, completions: list, group: list[str] | None = None, **_: object) -> list[float]:
        """Reward (:mod:`.reward`) of each completion for the persona in the aligned ``group`` column."""
        if group is None:
            raise ValueError("The personas reward needs the 'group' column; keep it in the dataset passed to TRL.")
        rewards = np.array([score(completion_text(c), g, min_words, max_words)["reward"] for c, g in
                            zip(completions, group, strict=True)])  # fmt: skip
        if binary:
            rewards = (rewards >= BINARY_THRESHOLD).astype(np.float64)
        rewards *= np.array([scale_of[g] for g in group])
        if reward_noise > 0:
            limit = NOISE_CLIP * reward_noise
            rewards += np.clip(noise_rng.normal(0.0, reward_noise, len(rewards)), -limit, limit)
        return rewards.tolist()

    return personas_reward


@register_task("personas")
def build(
    seed: int = 0,
    num_train: int = 2000,
    num_eval: int = 210,
    shares: Sequence[float] | None = None,
    balanced_eval: bool = True,
    reward_scale: Sequence[float] | float | None = None,
    reward_noise: float = 0.0,
    binary: bool = False,
    min_words: int = 8,
    max_words: int = 64,
    num_sft: int = 1400,
    sft_preference: Sequence[float] | float = 0.5,
    describe_preferences: bool = False,
    anonymous: bool = False,
) -> Task:
    """Seven synthetic personas (style x music genre, imbalanced) ask for music; the persona is the group.

    The task is built deterministically from ``seed`` (the package docstring).

    seed:          everything random (group order, prompts, SFT completions, reward noise) derives from it.
    num_train:     train rows, split over the personas by ``shares`` with largest-remainder rounding.
    num_eval:      held-out rows, split equally over the personas (``balanced_eval``) or by ``shares``.
    balanced_eval: split the held-out rows equally over the personas; False splits them by ``shares``.
    shares:        7 train shares in PERSONAS order, normalised to sum 1; default 0.40, 0.20, 0.15, 0.10, 0.07,
                   0.04, 0.04 (one majority, two 4% minorities). A persona with share 0 is left out of the train
                   and held-out prompts (at least two must remain), e.g. two users who want opposite things.
    reward_scale:  one positive factor, or 7 in PERSONAS order, multiplying that persona's reward.
    reward_noise:  std of the Gaussian noise added to every reward (clipped at +-4 std).
    binary:        reward 1[dense >= 0.75] instead of the dense score.
    min_words, max_words: the length window outside which the length factor falls.
    num_sft:       warm-start prompt/completion pairs, equal numbers per persona.
    sft_preference: probability that an SFT completion's genre (and, independently, style) is the persona's own:
                   one for all personas, or 7 in PERSONAS order (0 for a persona: its warm start rarely writes
                   its genre or style, and RL must find them).
    describe_preferences: state each persona's genre and style in the prompt.
    anonymous:     prompts say "A listener asks: ..." instead of naming the persona, so personas who want
                   different answers send indistinguishable prompts; the group is only in the ``group`` column.
    """
    shares = [p.share for p in PERSONAS] if shares is None else _per_persona(shares, "shares", "share")
    scales = _per_persona(1.0 if reward_scale is None else reward_scale, "reward_scale")
    if not (math.isfinite(reward_noise) and reward_noise >= 0):
        raise ValueError(f"reward_noise is a standard deviation and must be >= 0, got {reward_noise!r}.")
    if not 0 < min_words < max_words:
        raise ValueError(f"Need 0 < min_words < max_words, got min_words={min_words}, max_words={max_words}.")
    preferences = _per_persona(sft_preference, "sft_preference", "probability")
    train_sizes, eval_sizes = _split_sizes(shares, num_train, num_eval, balanced_eval)
    config = {
        "seed": seed, "num_train": num_train, "num_eval": num_eval, "shares": shares, "balanced_eval": balanced_eval,
        "reward_scale": scales, "reward_noise": reward_noise, "binary": binary, "min_words": min_words,
        "max_words": max_words, "num_sft": num_sft,
        "sft_preference": sft_preference if isinstance(sft_preference, int | float) else preferences,
        "describe_preferences": describe_preferences, "anonymous": anonymous,
    }  # fmt: skip
    data_rng, sft_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    prompt_style = PromptStyle(describe=describe_preferences, anonymous=anonymous)
    train = Dataset.from_dict(_rows(train_sizes, data_rng, prompt_style))
    evaluation = Dataset.from_dict(_rows(eval_sizes, data_rng, prompt_style))
    by_persona = dict(zip(BY_NAME, preferences, strict=True))
    sft = Dataset.from_dict(_sft_rows(num_sft, by_persona, sft_rng, prompt_style))
    spread = NOISE_CLIP * reward_noise
    return Task(
        name="personas",
        description=(
            "Seven synthetic personas ask for music recommendations; each prefers one linguistic style and one "
            "music genre, and the reward scores genre and style match with anti-hacking quality factors."
        ),
        train_dataset=train,
        eval_dataset=evaluation,
        reward_fn=_make_reward(seed, scales, reward_noise, binary, min_words, max_words),
        group_column="group",
        sft_dataset=sft,
        reward_range=(-spread, max(scales) + spread),
        config=config,
        group_descriptions={persona.name: f"{persona.name}, {persona.bio}" for persona in PERSONAS},
    )
