"""``tones``: draft a product review for a shopper whose wanted tone the prompt does not say.

A review-drafting assistant serves three kinds of shoppers, known from the data (say, their rating history) and
never named in the request: ``delighted`` (62% of prompts) want a warm, enthusiastic review, ``mixed`` (30%) a
balanced one, ``disappointed`` (8%) a frank, critical one. Every prompt is an everyday request such as
``"Help me write a short review of the dress I bought."``; the same request wants different text from each group,
so a policy that cannot tell them apart must trade one group off against another, and an instruct LM told who asks
(``group_conditioning="prompt"``, with the descriptions below) can write each tone.

Reward: the ``reviews`` reward (:mod:`pgrpo.tasks.reviews.reward`) with the group's target rating (delighted 5,
mixed 3, disappointed 1): closeness of the rating a TF-IDF + logistic-regression model reads in the text to the
target, times the quality factor that zeroes empty, short, repetitive, word-salad and gibberish text, times the guard
against copying the prompt, so that neither a list of sentiment words nor the group's description copied from a
conditioned prompt wins.

Held-out rows carry a real review of their group's rating (``reference_text``: the capability probe's held-out
text).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from datasets import Dataset

from pgrpo.tasks.base import Task, register_task
from pgrpo.tasks.reviews.data import truncate_review, words
from pgrpo.tasks.reviews.rating_model import rating_model
from pgrpo.tasks.reviews.reward import make_reward

# group -> (target rating, default train share, description for prompt conditioning). The descriptions are
# instructions for the policy to follow ("Write a negative one-star review ..."); where SmolLM2-135M-Instruct reads
# them best is measured by benchmarks/bench_instruction_position.py (docs/method.md).
TONES: dict[str, tuple[int, float, str]] = {
    "delighted": (5, 0.62, "Write a glowing, enthusiastic five-star review: the shopper loves this item."),
    "mixed": (3, 0.30, "Write a balanced three-star review: one thing the shopper liked and one thing they did not."),
    "disappointed": (1, 0.08, "Write a negative one-star review: the shopper is unhappy and says what went wrong."),
}
ITEMS = {
    "Dresses": "dress", "Knits": "knit top", "Blouses": "blouse", "Sweaters": "sweater", "Pants": "pants",
    "Jeans": "jeans", "Fine gauge": "fine-gauge sweater", "Skirts": "skirt", "Jackets": "jacket",
    "Lounge": "loungewear", "Swim": "swimsuit", "Outerwear": "coat", "Shorts": "shorts", "Sleep": "pajamas",
    "Legwear": "leggings", "Intimates": "bra", "Layering": "layering top", "Trend": "top",
    "Casual bottoms": "casual pants", "Chemises": "chemise",
}  # fmt: skip
REQUESTS = (
    "Help me write a short review of the {item} I bought.",
    "Write a two-sentence review of my new {item}.",
    "Draft a quick product review for the {item} I ordered.",
    "Could you write a brief review of the {item} I got last week?",
)


def request(item: str, variant: int) -> str:
    """The task prompt: request ``variant`` (an index into REQUESTS) about ``item``."""
    return REQUESTS[variant % len(REQUESTS)].format(item=item)


def group_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` rows split over the groups by ``shares`` (largest-remainder rounding, every count >= 1)."""
    raw = {group: total * share / sum(shares.values()) for group, share in shares.items()}
    counts = {group: max(1, int(value)) for group, value in raw.items()}
    for group in sorted(raw, key=lambda g: raw[g] - int(raw[g]), reverse=True)[: total - sum(counts.values())]:
        counts[group] += 1
    return counts


def _rows(reviews: pd.DataFrame, counts: dict[str, int], rng: np.random.Generator, real_text: bool) -> Dataset:
    """``counts[g]`` prompts per group g, each about the item of a real review of g's rating drawn from
    ``reviews`` (seeded, without replacement where there are enough), in shuffled order; with ``real_text`` that
    review as ``reference_text``."""
    parts = []
    for group, count in counts.items():
        pool = reviews[reviews["rating"] == TONES[group][0]]
        parts.append(pool.iloc[rng.choice(len(pool), size=count, replace=count > len(pool))].assign(group=group))
    rows = pd.concat(parts).iloc[rng.permutation(sum(counts.values()))]
    variants = rng.integers(len(REQUESTS), size=len(rows))
    columns = {
        "prompt": [request(ITEMS.get(c, "item"), v) for c, v in zip(rows["category"], variants, strict=True)],
        "group": rows["group"].tolist(),
        "target_rating": [TONES[group][0] for group in rows["group"]],
    }
    return Dataset.from_dict(columns | ({"reference_text": rows["text"].tolist()} if real_text else {}))


@register_task("tones")
def build(
    seed: int = 0,
    n_train: int = 2000,
    n_eval: int = 120,
    shares: dict[str, float] | None = None,
    min_words: int = 5,
    sft_words: int = 24,
) -> Task:
    """Build the ``tones`` task (:mod:`pgrpo.tasks.tones`).

    n_train:   RL prompts, split over the groups by ``shares``.
    n_eval:    held-out prompts, equally many per group (each group's held-out reward rests on as many prompts).
    shares:    train share per group, e.g. {"delighted": 0.5, "mixed": 0.4, "disappointed": 0.1}; default 62/30/8%.
    min_words: completions with fewer words get reward 0.
    sft_words: the tiny policy's warm-start reviews are cut to at most this many words.
    """
    shares = dict(shares or {group: share for group, (_, share, _) in TONES.items()})
    if unknown := sorted(set(shares) - set(TONES)) or [g for g, s in shares.items() if not s > 0]:
        raise ValueError(f"shares {shares}: give a positive share to groups among {list(TONES)}, not {unknown}.")
    model = rating_model(None, 0, 0.2, None)
    rng = np.random.default_rng(seed)
    train_reviews, test_reviews = model.reviews.iloc[model.train_index], model.reviews.iloc[model.test_index]
    train = _rows(train_reviews, group_counts(n_train, shares), rng, real_text=False)
    held_out = _rows(test_reviews, group_counts(n_eval, dict.fromkeys(shares, 1.0)), rng, real_text=True)
    sft = _rows(train_reviews, group_counts(600, shares), rng, real_text=True)
    short = [truncate_review(text, sft_words) for text in sft["reference_text"]]
    keep = [i for i, text in enumerate(short) if len(words(text)) >= min_words]
    completions = [" " + short[i] for i in keep]
    sft_dataset = Dataset.from_dict({"prompt": sft.select(keep)["prompt"], "completion": completions})
    return Task(
        name="tones",
        description=(
            "Review drafting for shoppers who want different tones (delighted: enthusiastic, mixed: balanced, "
            "disappointed: critical), the group known from the data, never from the request. Reward: the reviews "
            "task's rating model read against the group's target rating (5, 3, 1) times its degenerate-text guard. "
            f"Train shares: {'; '.join(f'{g}: {s / sum(shares.values()):.0%}' for g, s in shares.items())}."
        ),
        train_dataset=train,
        eval_dataset=held_out,
        reward_fn=make_reward(model, "expected", min_words),
        group_column="group",
        sft_dataset=sft_dataset,
        reward_range=(0.0, 1.0),
        config={"n_train": n_train, "n_eval": n_eval, "shares": shares, "min_words": min_words, "seed": seed},
        group_descriptions={group: description for group, (_, _, description) in TONES.items()},
    )
