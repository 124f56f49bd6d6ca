"""Figures of a bench, drawn on matplotlib ``Figure`` objects (no pyplot, no global backend state).

    plot_headline          per task at its defaults: every option's paired difference to grpo in worst-group
                           held-out reward, beside the same option on random labels (the evidence at a glance)
    plot_group_eval        per task: held-out reward per group (x) for each variant, dots with 95% intervals,
                           one panel per setting of the task (its defaults and its regimes), and each group's
                           specialist (grpo on that group's prompts alone) as a black bar where it ran
    plot_worst_vs_overall  one panel per setting: each variant's paired difference to grpo in overall (x) and
                           worst-group (y) held-out reward, 95% intervals on both axes
    plot_regimes           every setting at a glance (drawn when a regime ran): paired difference to grpo in
                           worst-group held-out reward
    plot_group_curves      per setting: each variant's training reward per group, smoothed

Each returns its ``Figure`` (``save`` writes it); the three comparisons with grpo return None when there is nothing
to compare. A variant has the same colour in every figure (``variant_colors`` of all the report's variants). Titles
are wrapped to the figure's width and number axes hold at most ``MAX_TICKS`` ticks, so that no text is clipped and no
tick labels run together in narrow panels.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pgrpo.experiments.bench.statistics import OVERALL, WORST, Interval, Run, smooth
from pgrpo.experiments.bench.variants import (
    RANDOM_SUFFIX,
    REFERENCES,
    SPECIALIST_PREFIX,
    is_random_control,
    is_specialist,
)

Rows = dict[str, dict[str, Any]]  # {variant: its table row} in one setting
Colors = dict[str, Any]
DPI = 110
MAX_TICKS = 3  # intervals on a number axis (at most 4 ticks): more run together in a narrow panel ("0.000.25")
SPECIALIST = "specialist (its own group)"


def save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI)


def wrapped(figure: Figure, text: str, fontsize: float) -> str:
    """``text`` broken into lines that fit the figure's width (about 0.55 em per character)."""
    return textwrap.fill(text, max(20, int(figure.get_figwidth() * 72 / (0.55 * fontsize))))


def titles(figure: Figure, title: str, xlabel: str = "", ylabel: str = "") -> None:
    """The figure's title and shared axis labels, wrapped to its width (a y label is drawn along the height)."""
    figure.suptitle(wrapped(figure, title, 12), fontsize=12)
    if xlabel:
        figure.supxlabel(wrapped(figure, xlabel, 10), fontsize=10)
    if ylabel:
        figure.supylabel(textwrap.fill(ylabel, max(20, int(figure.get_figheight() * 72 / (0.55 * 10)))), fontsize=10)


def few_ticks(ax: Axes, axis: str = "x") -> None:
    """At most ``MAX_TICKS`` + 1 ticks on the number ``axis`` ("x", "y" or "both")."""
    ax.locator_params(axis=axis, nbins=MAX_TICKS)


def variant_colors(variants: list[str]) -> Colors:
    palette = colormaps["tab10" if len(variants) <= 10 else "tab20"]
    return {variant: palette(index % palette.N) for index, variant in enumerate(variants)}


def panels(count: int, width: float, height: float, columns: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels in rows of ``columns``; unused cells hidden."""
    columns = max(1, min(columns, count))
    figure = Figure(figsize=(width * columns, height * math.ceil(count / columns)), layout="constrained")
    axes = list(figure.subplots(math.ceil(count / columns), columns, squeeze=False).flat)
    for ax in axes[count:]:
        ax.axis("off")
    return figure, axes[:count]


def bars(values: list[Interval]) -> tuple[list[float], np.ndarray]:
    """Means and error-bar half-widths (a single seed's nan drawn as 0)."""
    return [mean for mean, _ in values], np.nan_to_num(np.array([half for _, half in values], dtype=float))


def legend(figure: Figure, axes: list[Axes]) -> None:
    """One legend for all panels, right of them; the figure widens by the legend's width (about 0.55 em per
    character of 9 pt, and the marker), so that the panels keep theirs."""
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    figure.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=9)
    figure.set_figwidth(figure.get_figwidth() + 0.8 + 0.55 * 9 / 72 * max(map(len, handles), default=0))


def plot_headline(table: dict[str, Rows], tasks: list[str], colors: Colors) -> Figure | None:
    """At each task's defaults, every option's paired difference to grpo in held-out worst-group reward (filled)
    and the same for its random-label control (hollow, just below), mean and 95% interval over seeds."""
    tasks = [task for task in tasks if "grpo" in table[task]]
    options = [variant for variant in dict.fromkeys(v for task in tasks for v in table[task])
               if variant not in REFERENCES and not is_random_control(variant)]  # fmt: skip
    if not options:
        return None
    figure, axes = panels(len(tasks), 4.2, 0.34 * len(options) + 1.6, columns=len(tasks))
    for column, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        rows = table[task]
        for index, option in enumerate(options):
            for offset, name, face in ((-0.15, option, colors[option]), (0.15, option + RANDOM_SUFFIX, "white")):
                if name in rows:
                    mean, half = rows[name][f"{WORST} - grpo"]
                    ax.errorbar(mean, index + offset, xerr=np.nan_to_num(half), fmt="o", ms=5, capsize=3,
                                color=colors[option], markerfacecolor=face)  # fmt: skip
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(np.arange(len(options)), options if column == 0 else [], fontsize=9)
        ax.set_ylim(len(options) - 0.5, -0.5)
        ax.set_title(task, fontsize=11)
        few_ticks(ax)
        ax.grid(axis="x", alpha=0.3)
    titles(figure, "Held-out worst-group reward, paired difference to GRPO (same seed): mean ± 95% CI",
           "filled: the option; hollow: the same option on randomly permuted group labels")  # fmt: skip
    return figure


def plot_group_eval(settings: dict[str, Rows], colors: Colors, title: str) -> Figure:
    """Held-out reward per group of each variant (mean and 95% interval over seeds), one panel per setting; the
    specialist of a group (``specialist_<g>`` rows: grpo on g's prompts alone) as a black bar at g."""
    figure, axes = panels(len(settings), 6.0, 3.2, columns=2)
    for ax, (name, rows) in zip(axes, settings.items(), strict=True):
        shared = {variant: row for variant, row in rows.items() if not is_specialist(variant)}
        groups = sorted({group for row in shared.values() for group in row["per_group_eval"]})
        x = np.arange(len(groups))
        offsets = np.linspace(-0.3, 0.3, len(shared)) if len(shared) > 1 else [0.0]
        for offset, (variant, row) in zip(offsets, shared.items(), strict=True):
            means, halves = bars([row["per_group_eval"].get(group, (math.nan, math.nan)) for group in groups])
            ax.errorbar(x + offset, means, yerr=halves, fmt="o", ms=4, capsize=2, color=colors[variant], label=variant)
        specialists = [(i, rows[SPECIALIST_PREFIX + g]["per_group_eval"].get(g)) for i, g in enumerate(groups)
                       if SPECIALIST_PREFIX + g in rows]  # fmt: skip
        if specialists:
            ax.plot([i for i, _ in specialists], [value[0] if value else math.nan for _, value in specialists],
                    "_", ms=28, mew=2, color="black", label=SPECIALIST)  # fmt: skip
        ax.set_xticks(x, groups, fontsize=8, rotation=20 if max(map(len, groups), default=0) > 6 else 0)
        ax.set_title(name, fontsize=10)
        few_ticks(ax, "y")
        ax.grid(axis="y", alpha=0.3)
    titles(figure, title, ylabel="held-out reward (mean ± 95% CI)")
    legend(figure, axes)
    return figure


def compared_to_grpo(table: dict[str, Rows]) -> list[str]:
    """The settings with grpo and at least one other variant."""
    return [name for name, rows in table.items() if "grpo" in rows and len(rows) > 1]


def plot_worst_vs_overall(table: dict[str, Rows], colors: Colors) -> Figure | None:
    """Paired differences to grpo: overall (x) against worst-group (y) held-out reward, one panel per setting."""
    names = compared_to_grpo(table)
    if not names:
        return None
    figure, axes = panels(len(names), 4.0, 3.4, columns=4)
    for ax, name in zip(axes, names, strict=True):
        for variant, row in table[name].items():
            if variant != "grpo":
                (x, x_half), (y, y_half) = row[f"{OVERALL} - grpo"], row[f"{WORST} - grpo"]
                x_bar, y_bar = np.nan_to_num([x_half, y_half])
                ax.errorbar(x, y, xerr=x_bar, yerr=y_bar, fmt="o", capsize=3, color=colors[variant], label=variant)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=10)
        few_ticks(ax, "both")
        ax.grid(alpha=0.3)
    titles(figure, "Paired difference to grpo (same seed), mean ± 95% CI over seeds", "Δ held-out reward (sampled)",
           "Δ held-out worst-group reward (sampled)")  # fmt: skip
    legend(figure, axes)
    return figure


def plot_regimes(table: dict[str, Rows], regimes: list[str], colors: Colors) -> Figure | None:
    """Every setting's paired difference to grpo in held-out worst-group reward, each variant a dot; None unless one
    of ``regimes`` (the settings other than a task's defaults) ran grpo beside another variant."""
    names = compared_to_grpo(table)
    if not set(names) & set(regimes):
        return None
    figure = Figure(figsize=(8, 0.45 * len(names) + 1.8), layout="constrained")
    ax = figure.subplots()
    variants = sorted({variant for name in names for variant in table[name]} - {"grpo"}, key=list(colors).index)
    offsets = dict(zip(variants, np.linspace(-0.25, 0.25, len(variants)) if len(variants) > 1 else [0.0], strict=True))
    for variant in variants:
        rows = [index for index, name in enumerate(names) if variant in table[name]]
        means, halves = bars([table[names[index]][variant][f"{WORST} - grpo"] for index in rows])
        ax.errorbar(means, np.array(rows) + offsets[variant], xerr=halves, fmt="o", ms=4, capsize=3,
                    color=colors[variant], label=variant)  # fmt: skip
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(np.arange(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    few_ticks(ax)
    ax.set_xlabel(wrapped(figure, "Δ held-out worst-group reward vs grpo (same seed), mean ± 95% CI over seeds", 10))
    ax.grid(axis="x", alpha=0.3)
    legend(figure, [ax])
    return figure


def plot_group_curves(runs: dict[str, list[Run]], colors: Colors, title: str) -> Figure:
    """Per-group training reward of each variant (mean over seeds, smoothed), one panel per group.

    Runs on other group labels (random, merged, discovered) appear in the "all groups" panel only: the trainer
    logs their per-group metrics under its own labels (their held-out per-group results use the task's groups).
    """
    groups = sorted({group for seeds in runs.values() for run in seeds for group in run["group_curves"]})
    curve_of = {"all groups": lambda run: run["curve"], "worst group": lambda run: run["worst_curve"]}
    curve_of |= {group: lambda run, group=group: run["group_curves"].get(group, []) for group in groups}
    figure, axes = panels(len(curve_of), 4.0, 3.0, columns=4)
    for ax, (label, get) in zip(axes, curve_of.items(), strict=True):
        for variant, seeds in runs.items():
            if label != "all groups" and any(run.get("group_labels", "task") != "task" for run in seeds):
                continue
            curves = [get(run) for run in seeds]
            length = min(map(len, curves))
            if length == 0:
                continue
            mean = pd.DataFrame([curve[:length] for curve in curves], dtype=float).mean()  # NaN: no seed saw it
            ax.plot(np.arange(1, length + 1), smooth(mean, 8), color=colors[variant], label=variant)
        ax.set_title(label, fontsize=10)
        few_ticks(ax, "both")
        ax.grid(alpha=0.3)
    titles(figure, title, "step", "train reward (smoothed)")
    legend(figure, axes)
    return figure
