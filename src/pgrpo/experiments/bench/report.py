"""``report.md``, ``results.json`` and the figures of a bench directory, from its finished runs.

results.json: ``{task or regime: {variant: {metric: [mean, 95% half-width], ..., "per_group_eval": {group:
[mean, half-width]}}}, "bar": {variant: ...}}`` (statistics.py, bar.py). report.md: the bar, then per task its
settings (defaults first, then regimes), each with its table, held-out reward per group and training curves.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from pgrpo.experiments.bench.bar import (
    MAX_GAP,
    MAX_PERPLEXITY_RATIO,
    MIN_TASKS,
    MIX_TOLERANCE,
    REQUIRED_REGIME,
    bar,
)
from pgrpo.experiments.bench.plots import (
    plot_group_curves,
    plot_group_eval,
    plot_headline,
    plot_regimes,
    plot_worst_vs_overall,
    save,
    variant_colors,
)
from pgrpo.experiments.bench.statistics import (
    CAPABILITY,
    CONDITIONING_MIX,
    CONDITIONING_WORST,
    GAP,
    GAP_MAX,
    OVERALL,
    RL_SHARE_MIX,
    RL_SHARE_WORST,
    STEPS_TO_90,
    TRAIN_MIX_DELTA,
    WORST,
    Interval,
    Setting,
    collect,
    summarize,
)
from pgrpo.experiments.bench.variants import is_random_control, is_specialist
from pgrpo.tasks.registry import task_directory_name

COLUMNS = {  # report column -> table metric
    "held-out reward": OVERALL,
    "worst group": WORST,
    "majority-minority gap": "eval majority-minority gap",
    "train reward AUC": "train reward AUC",
    "KL to initial": "KL to initial",
    "perplexity": "perplexity",
    "perplexity, held-out real text": "perplexity, held-out real text",
    "s/step": "s/step",
    "Δ held-out": f"{OVERALL} - grpo",
    "Δ worst group": f"{WORST} - grpo",
    "Δ worst group, real - random labels": f"{WORST} - random labels",
    "Δ train mix": TRAIN_MIX_DELTA,
    "largest personalization gap": GAP_MAX,
    "RL share, worst group": RL_SHARE_WORST,
    "RL share, train mix": RL_SHARE_MIX,
    "conditioning share, worst group": CONDITIONING_WORST,
    "conditioning share, train mix": CONDITIONING_MIX,
    "perplexity / initial": CAPABILITY,
}
STEPS_COLUMN = "steps to 90% grpo, median (range)"
KIND_ORDER = {"task": 0, "regime": 1, "sweep": 2}


def fmt(value: Interval | None, digits: int = 3) -> str:
    mean, half = value if value is not None else (math.nan, math.nan)
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if not math.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def fmt_reach(value: dict[str, float]) -> str:
    """Steps to a threshold (``statistics.reach``): ``median (min–max)``, ``in k of n seeds`` when some seeds never
    reached it, ``never`` when none did."""
    if not value["reached"]:
        return "never"
    text = f"{value['median']:g}" + (f" ({value['min']:g}–{value['max']:g})" if value["min"] < value["max"] else "")
    return text if value["reached"] == value["seeds"] else f"{text} in {value['reached']} of {value['seeds']} seeds"


def markdown(frame: pd.DataFrame) -> list[str]:
    """``frame`` as a markdown table, its index as the first column."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    body = [[str(index), *map(str, values)] for index, values in zip(frame.index, frame.to_numpy(), strict=True)]
    return ["| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *body]]


def setting_table(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per variant: seeds, the COLUMNS (those some variant has), steps to 90% of grpo's final training
    reward."""
    frame = pd.DataFrame.from_dict(
        {
            variant: {
                "seeds": row["seeds"],
                **{label: fmt(row.get(metric)) for label, metric in COLUMNS.items()},
                STEPS_COLUMN: fmt_reach(row[STEPS_TO_90]),
            }
            for variant, row in rows.items()
        },
        orient="index",
    )
    return frame.loc[:, (frame != "–").any()].rename_axis("variant")


def group_table(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Held-out reward per group (columns) of each variant (rows)."""
    cells = {variant: {g: fmt(v, 2) for g, v in row["per_group_eval"].items()} for variant, row in rows.items()}
    return pd.DataFrame.from_dict(cells, orient="index").fillna("–").rename_axis("variant")


def bar_table(verdicts: dict[str, dict[str, Any]]) -> pd.DataFrame:
    def listed(names: list[str]) -> str:
        return ", ".join(names) or "none"

    def conditions(verdict: dict[str, Any]) -> str:  # which condition fails where
        failing = {name: [c for c, ok in met.items() if not ok] for name, met in verdict["conditions"].items()}
        return "; ".join(f"{name}: {', '.join(c)}" for name, c in failing.items() if c) or "none"

    def project_columns(verdict: dict[str, Any]) -> dict[str, str]:  # the project bench's rule only
        if verdict["rule"] != "project":
            return {}
        return {
            f"serves (tasks; need {MIN_TASKS})": listed(verdict["tasks served"]),
            f"serves {REQUIRED_REGIME}": "yes" if verdict["anonymous served"] else "no",
            "real > random labels, worst group (tasks; need 1)": listed(verdict["beats random labels"]),
        }

    cells = {
        variant: {
            **project_columns(verdict),
            "bar met": "**yes**" if verdict["met"] else "no",
            "settings served": listed(verdict["serves"]),
            "conditions not met": conditions(verdict),
        }
        for variant, verdict in verdicts.items()
    }
    return pd.DataFrame.from_dict(cells, orient="index").rename_axis("variant")


def bar_text(verdicts: dict[str, dict[str, Any]]) -> str:
    """The bar in words, with the rule the bench's settings call for (bar.py)."""
    serves = (
        "A variant serves a setting when its held-out worst-group reward beats grpo's (95% interval above zero), its "
        f"train-mix reward is not lower (interval's lower end >= -{MIX_TOLERANCE}), its largest personalization gap "
        f"(specialist_g - variant_g, the specialist from the same initial policy) is <= {MAX_GAP}, the RL's share of "
        "its worst group (minus the same policy untrained and told the same: frozen or frozen_prompt) lies above "
        f"zero, and its perplexity on held-out real text is at most {MAX_PERPLEXITY_RATIO:.2f}x its initial policy's."
    )
    if any(verdict["rule"] == "project" for verdict in verdicts.values()):
        return (
            f"{serves} It clears the bar when it serves the defaults of at least {MIN_TASKS} tasks and "
            f"{REQUIRED_REGIME}, and its real labels beat random ones on the worst group at the defaults of at least "
            "one task."
        )
    return f"{serves} It clears the bar when it serves every setting of this bench."


def gap_table(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Personalization gap per group (columns) of each variant with specialists (rows), and the largest."""
    cells = {
        variant: {**{g: fmt(v, 2) for g, v in row[GAP].items()}, "largest": fmt(row[GAP_MAX], 3)}
        for variant, row in rows.items()
        if GAP in row
    }
    return pd.DataFrame.from_dict(cells, orient="index").fillna("–").rename_axis("variant")


def example_lines(setting: Setting, width: int = 160) -> list[str]:
    """A markdown table of one sampled held-out completion per group of every trained variant (its lowest seed) and
    of the untrained references: what each policy writes for each group, so that reward hacking shows."""
    cells = []
    for variant, runs in setting.runs.items():
        if is_specialist(variant) or is_random_control(variant) or not runs:
            continue
        first = min(runs, key=lambda run: run["seed"])
        for group in sorted({example["group"] for example in first.get("examples", [])}):
            text = next(e.get("sampled", e.get("greedy", "")) for e in first["examples"] if e["group"] == group)
            text = " ".join(text.split()).replace("|", "\\|")
            cells.append((variant, group, text if len(text) <= width else text[: width - 1] + "…"))
    if not cells:
        return []
    frame = pd.DataFrame(cells, columns=["variant", "group", "sampled completion (seed 0)"]).set_index("variant")
    return ["Sampled held-out completions, one per group:", "", *markdown(frame), ""]


def describe(setting: Setting) -> str:
    """What a setting is: a task's defaults or a regime's task options and flags."""
    if setting.kind == "task":
        return f"Task `{setting.task}` at its defaults."
    if setting.regime is None:
        return f"Regime of an earlier bench on `{setting.task}`."
    regime = setting.regime
    parts = [f"task options `{json.dumps(regime['task_options'])}`"] * bool(regime["task_options"])
    parts += [f"flags `{json.dumps(regime['flags'])}`"] * bool(regime["flags"])
    return f"Regime of `{setting.task}`: " + ", ".join(parts) + "."


def served_by(setting: str, verdicts: dict[str, dict[str, Any]]) -> str:
    """Which candidate variants serve ``setting`` (all five conditions of the bar), in words."""
    names = [variant for variant, verdict in verdicts.items() if setting in verdict["serves"]]
    return f"Served (all five conditions of the bar) by: {', '.join(names)}." if names else "No variant serves it."


def write_report(bench_dir: Path, command: str = "") -> Path:
    """Tables, figures and results.json for every finished run under ``bench_dir/runs``."""
    settings = collect(bench_dir / "runs")
    if not settings:
        raise FileNotFoundError(f"No finished runs under {bench_dir / 'runs'}; run `pgrpo bench --out {bench_dir}`.")
    settings = dict(sorted(settings.items(), key=lambda item: (item[1].task, KIND_ORDER[item[1].kind], item[0])))
    full = summarize({name: setting.runs for name, setting in settings.items()})
    verdicts = bar(full, settings)
    (bench_dir / "results.json").write_text(json.dumps({**full, "bar": verdicts}, indent=1))
    table = {name: {v: row for v, row in rows.items() if not is_specialist(v)} for name, rows in full.items()}
    colors = variant_colors(sorted({variant for rows in table.values() for variant in rows}))

    lines = [f"# pgrpo bench: {bench_dir}", ""]
    if command:
        lines += ["Reproduce with:", "", f"    {command}", ""]
    lines += [
        "Mean ± 95% t-interval over seeds; `Δ` columns are paired differences (same seed) to `grpo`, or to the",
        "variant on randomly permuted group labels (`<variant>_random`). Held-out rewards are of sampled completions.",
        "Steps to 90% of grpo's final train reward: median (range) over the seeds that reached it.",
        "",
        "## The bar: personalize, don't trade off",
        "",
        bar_text(verdicts),
        "",
        *markdown(bar_table(verdicts)),
        "",
    ]
    task_defaults = [name for name, setting in settings.items() if setting.kind == "task"]
    regimes = [name for name in settings if name not in task_defaults]
    for name, plot, caption in (
        ("headline.png", partial(plot_headline, tasks=task_defaults), "worst group vs grpo at each task's defaults"),
        ("worst_vs_overall.png", plot_worst_vs_overall, "worst group vs overall, paired to grpo"),
        ("regimes.png", partial(plot_regimes, regimes=regimes), "worst group vs grpo in every setting"),
    ):
        if (figure := plot(table, colors=colors)) is not None:
            save(figure, bench_dir / name)
            lines += [f"![{caption}]({name})", ""]
        else:  # nothing to compare: no figure, and none left from an earlier report
            (bench_dir / name).unlink(missing_ok=True)
    for task in dict.fromkeys(setting.task for setting in settings.values()):
        names = [name for name, setting in settings.items() if setting.task == task]
        figure = f"groups_{task_directory_name(task)}.png"
        save(plot_group_eval({name: full[name] for name in names}, colors, f"{task}: held-out reward per group"),
             bench_dir / figure)  # fmt: skip
        lines += [f"## {task}", "", f"![{task}: held-out reward per group]({figure})", ""]
        for name in names:
            setting, rows = settings[name], table[name]
            prompts = next(iter(next(iter(setting.runs.values())))).get("eval", {}).get("per_group_prompts", {})
            curves = f"curves_{task_directory_name(name)}.png"
            shared = {variant: runs for variant, runs in setting.runs.items() if not is_specialist(variant)}
            save(plot_group_curves(shared, colors, f"{name}: per-group training reward"), bench_dir / curves)
            lines += [f"### {name}", "", describe(setting), served_by(name, verdicts)]
            if prompts:
                lines += ["Held-out prompts per group: " + ", ".join(f"{g} {n}" for g, n in prompts.items()) + "."]
            lines += ["", *markdown(setting_table(rows)), "", "Held-out reward per group:", ""]
            lines += [*markdown(group_table(rows)), ""]
            if not (gaps := gap_table(rows)).empty:
                lines += ["Personalization gap per group (specialist - variant; the specialist: grpo on that "
                          "group's prompts alone):", "", *markdown(gaps), ""]  # fmt: skip
            lines += [f"![{name}: training curves]({curves})", "", *example_lines(setting)]
    report = bench_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
