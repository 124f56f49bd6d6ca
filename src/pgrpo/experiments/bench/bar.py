"""The bar a variant must clear before we say it personalizes, computed from the per-setting tables.

Personalize, don't trade off. A variant v **serves a setting** when, in that setting:

1. its held-out worst-group reward beats grpo's: the 95% interval of the paired difference (same seed) lies
   above zero;
2. nobody pays: its reward weighted by the groups' train shares (``eval train mix``: what the users of the data
   as it is would see) is not lower than grpo's, the lower end of the interval of the paired difference >= -0.01;
3. it serves each group about as well as a policy of that group's own: its largest personalization gap
   (specialist_g - v_g, the same policy and budget trained on group g's prompts alone; the mean of the group
   with the largest mean gap) is <= 0.05.

v **clears the bar** when it serves the defaults of at least 2 of the 3 tasks (personas, movielens, reviews)
**and** the ``personas:anonymous`` regime (users the prompt does not tell apart), and its real labels beat
random ones on the worst group (the interval of the paired difference to ``<v>_random`` above zero) at the
defaults of at least one task. The bench's step count applies to all of it, specialists included, so the bar
can be read at the usual 40 steps or at a longer-training point.

An interval "lies above zero" when mean - half-width > 0 (at least two seeds). The references (grpo, frozen),
the random-label controls and the specialists are not candidates. The verdict also lists, for every other
setting (regimes), whether v serves it: evidence of where personalization works, not the bar.
"""

from __future__ import annotations

import math
from typing import Any

from pgrpo.experiments.bench.statistics import GAP_MAX, TRAIN_MIX_DELTA, WORST, Interval, Setting
from pgrpo.experiments.bench.variants import REFERENCES, is_random_control, is_specialist

MIN_TASKS = 2
REQUIRED_REGIME = "personas:anonymous"
MIX_TOLERANCE = 0.01  # train-mix reward may fall by at most this much (interval's lower end)
MAX_GAP = 0.05  # the largest personalization gap allowed
NAN_INTERVAL = (math.nan, math.nan)


def above_zero(value: Interval) -> bool:
    mean, half = value
    return math.isfinite(half) and mean - half > 0


def serves(row: dict[str, Any]) -> dict[str, bool]:
    """Which of the three conditions (module docstring) ``row`` (a variant in one setting) meets."""
    mix_mean, mix_half = row.get(TRAIN_MIX_DELTA, NAN_INTERVAL)
    gap = row.get(GAP_MAX, NAN_INTERVAL)[0]
    return {
        "worst group > grpo": above_zero(row.get(f"{WORST} - grpo", NAN_INTERVAL)),
        "train mix not lower": math.isfinite(mix_half) and mix_mean - mix_half >= -MIX_TOLERANCE,
        "gap <= 0.05": math.isfinite(gap) and gap <= MAX_GAP,
    }


def bar(table: dict[str, dict[str, dict[str, Any]]], settings: dict[str, Setting]) -> dict[str, dict[str, Any]]:
    """{variant: {"serves": settings where all three conditions hold, "conditions": {setting: each condition},
    "tasks served", "anonymous served", "beats random labels" (tasks), "met"}} (module docstring)."""
    candidates = dict.fromkeys(
        variant
        for rows in table.values()
        for variant in rows
        if variant not in REFERENCES and not is_random_control(variant) and not is_specialist(variant)
    )
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
        verdicts[variant] = {
            "serves": served,
            "conditions": conditions,
            "tasks served": tasks,
            "anonymous served": REQUIRED_REGIME in served,
            "beats random labels": labels,
            "met": len(tasks) >= MIN_TASKS and REQUIRED_REGIME in served and len(labels) >= 1,
        }
    return verdicts
