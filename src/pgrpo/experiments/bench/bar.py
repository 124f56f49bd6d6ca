"""The bar a variant must clear before we say it personalizes, computed from the per-setting tables.

Personalize, don't trade off. A variant v **serves a setting** when, in that setting:

1. its held-out worst-group reward beats grpo's: the 95% interval of the paired difference (same seed) lies
   above zero;
2. nobody pays: its reward weighted by the groups' train shares (``eval train mix``: what the users of the data
   as it is would see) is not lower than grpo's, the lower end of the interval of the paired difference >= -0.01;
3. it serves each group about as well as a policy of that group's own: its largest personalization gap
   (specialist_g - v_g, the same initial policy and budget trained on group g's prompts alone; the mean of the
   group with the largest mean gap) is <= 0.05;
4. the RL adds to the untrained policy told the same (its reference ``frozen`` or ``frozen_prompt``): the interval
   of its worst group minus its reference's, paired by seed (``rl share worst group``), lies above zero;
5. capability is kept: its perplexity on held-out real text (else held-out prompts) is within 10% of its initial
   policy's (the mean ratio <= 1.10), so that a reward won by degenerate text does not count.

Which settings v must serve (``rule``): where the bench ran the ``personas:anonymous`` regime (the project's
personalization bench), the defaults of at least 2 of the 3 tasks (personas, movielens, reviews) **and**
``personas:anonymous``, with real labels beating random ones on the worst group (the interval of the paired
difference to ``<v>_random`` above zero) at the defaults of at least one task; on any other bench (a real-LM bench,
a user's own tasks) every setting that ran. The bench's step count applies to all of it, specialists included.

An interval "lies above zero" when mean - half-width > 0 (at least two seeds). The references (grpo, frozen,
frozen_prompt), the random-label controls and the specialists are not candidates. The verdict lists, for every
setting, whether v serves it and which conditions fail.
"""

from __future__ import annotations

import math
from typing import Any

from pgrpo.experiments.bench.statistics import (
    CAPABILITY,
    GAP_MAX,
    RL_SHARE_WORST,
    TRAIN_MIX_DELTA,
    WORST,
    Interval,
    Setting,
)
from pgrpo.experiments.bench.variants import REFERENCES, is_random_control, is_specialist

MIN_TASKS = 2
REQUIRED_REGIME = "personas:anonymous"
MIX_TOLERANCE = 0.01  # train-mix reward may fall by at most this much (interval's lower end)
MAX_GAP = 0.05  # the largest personalization gap allowed
MAX_PERPLEXITY_RATIO = 1.10  # capability kept: perplexity at most 10% above the initial policy's
NAN_INTERVAL = (math.nan, math.nan)


def above_zero(value: Interval) -> bool:
    mean, half = value
    return math.isfinite(half) and mean - half > 0


def serves(row: dict[str, Any]) -> dict[str, bool]:
    """Which of the five conditions (module docstring) ``row`` (a variant in one setting) meets."""
    mix_mean, mix_half = row.get(TRAIN_MIX_DELTA, NAN_INTERVAL)
    gap, ratio = row.get(GAP_MAX, NAN_INTERVAL)[0], row.get(CAPABILITY, NAN_INTERVAL)[0]
    return {
        "worst group > grpo": above_zero(row.get(f"{WORST} - grpo", NAN_INTERVAL)),
        "train mix not lower": math.isfinite(mix_half) and mix_mean - mix_half >= -MIX_TOLERANCE,
        f"gap <= {MAX_GAP}": math.isfinite(gap) and gap <= MAX_GAP,
        "RL share of worst group > 0": above_zero(row.get(RL_SHARE_WORST, NAN_INTERVAL)),
        "capability kept": math.isfinite(ratio) and ratio <= MAX_PERPLEXITY_RATIO,
    }


def bar(table: dict[str, dict[str, dict[str, Any]]], settings: dict[str, Setting]) -> dict[str, dict[str, Any]]:
    """{variant: {"rule", "serves": settings where all five conditions hold, "conditions": {setting: each condition},
    "tasks served", "anonymous served", "beats random labels" (tasks), "met"}} (module docstring)."""
    candidates = dict.fromkeys(
        variant
        for rows in table.values()
        for variant in rows
        if variant not in REFERENCES and not is_random_control(variant) and not is_specialist(variant)
    )
    project_bench = REQUIRED_REGIME in settings
    verdicts = {}
    for variant in candidates:
        rows = {name: rows[variant] for name, rows in table.items() if variant in rows}
        conditions = {name: serves(row) for name, row in rows.items()}
        served = [name for name, met in conditions.items() if all(met.values())]
        at_defaults = {name for name in rows if settings[name].kind == "task"}
        tasks = sorted({settings[name].task for name in served if name in at_defaults})
        labels = sorted(
            settings[name].task
            for name, row in rows.items()
            if name in at_defaults and above_zero(row.get(f"{WORST} - random labels", NAN_INTERVAL))
        )
        met = (
            len(tasks) >= MIN_TASKS and REQUIRED_REGIME in served and len(labels) >= 1
            if project_bench
            else len(served) == len(rows)
        )
        verdicts[variant] = {
            "rule": "project" if project_bench else "every setting",
            "serves": served,
            "conditions": conditions,
            "tasks served": tasks,
            "anonymous served": REQUIRED_REGIME in served,
            "beats random labels": labels,
            "met": met,
        }
    return verdicts
