"""The bar a variant must clear before we say it helps, computed from the per-setting tables.

A variant v clears the bar when both hold:

1. **beats grpo on the worst group on at least 2 tasks**: a task counts when, at the task's defaults, the 95%
   interval of v's paired difference to grpo (same seed) in held-out worst-group reward lies above zero, and
   the interval of the difference in held-out overall reward does not lie below zero (not significantly lower);
2. **real labels beat random labels on at least one task**: at some task's defaults the 95% interval of the
   paired difference in held-out worst-group reward between v and ``<v>_random`` (same flags, randomly
   permuted group labels, same seed) lies above zero.

The held-out prompts are balanced over groups, so condition 1's guard weighs every group alike. The verdict
also lists the tasks where, besides, the reward weighted by the groups' train shares (``eval reward (train
mix)``: what users of the data as it is would see) is not significantly lower: serving a small group can cost
the majority, and this column says where it does. It is reported, not part of the bar.

Only the tasks' default settings count: a regime is one more setting of a task, and letting any of a task's
settings count would test that task several times. The regimes' verdicts are listed separately
(``regimes beating grpo``, ``regimes beating random labels``): evidence of when the labels matter, not the bar.
An interval "lies above zero" when mean - half-width > 0 (at least two seeds). The references (grpo, and
frozen: the warm-started policy without updates) and the random-label controls are not candidates.
"""

from __future__ import annotations

import math
from typing import Any

from pgrpo.experiments.bench.statistics import OVERALL, TRAIN_MIX, WORST, Interval, Setting
from pgrpo.experiments.bench.variants import REFERENCES, is_random_control

MIN_TASKS = 2
NAN_INTERVAL = (math.nan, math.nan)


def above_zero(value: Interval) -> bool:
    mean, half = value
    return math.isfinite(half) and mean - half > 0


def below_zero(value: Interval) -> bool:
    mean, half = value
    return math.isfinite(half) and mean + half < 0


def bar(table: dict[str, dict[str, dict[str, Any]]], settings: dict[str, Setting]) -> dict[str, dict[str, Any]]:
    """{variant: {"beats grpo": tasks passing condition 1, "beats random labels": tasks passing condition 2,
    "regimes beating grpo" / "regimes beating random labels": the regimes where the same holds, "met": both
    conditions hold}} (module docstring)."""
    candidates = dict.fromkeys(
        variant
        for rows in table.values()
        for variant in rows
        if variant not in REFERENCES and not is_random_control(variant)
    )
    verdicts = {}
    for variant in candidates:
        rows = {name: rows[variant] for name, rows in table.items() if variant in rows}
        beats_grpo = [
            name
            for name, row in rows.items()
            if above_zero(row[f"{WORST} - grpo"]) and not below_zero(row[f"{OVERALL} - grpo"])
        ]
        beats_random = [
            name for name, row in rows.items() if above_zero(row.get(f"{WORST} - random labels", NAN_INTERVAL))
        ]
        at_defaults = {name for name in rows if settings[name].kind == "task"}
        mix = {name: rows[name].get(f"{TRAIN_MIX} - grpo", NAN_INTERVAL) for name in beats_grpo}
        mix_holds = [name for name, value in mix.items() if math.isfinite(value[0]) and not below_zero(value)]
        tasks = sorted({settings[name].task for name in beats_grpo if name in at_defaults})
        labels = sorted({settings[name].task for name in beats_random if name in at_defaults})
        verdicts[variant] = {
            "beats grpo": tasks,
            "beats grpo, train mix not lower": sorted({settings[n].task for n in mix_holds if n in at_defaults}),
            "beats random labels": labels,
            "regimes beating grpo": [name for name in beats_grpo if name not in at_defaults],
            "regimes beating random labels": [name for name in beats_random if name not in at_defaults],
            "met": len(tasks) >= MIN_TASKS and len(labels) >= 1,
        }
    return verdicts
