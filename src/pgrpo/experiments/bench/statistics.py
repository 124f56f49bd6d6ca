"""From run directories to tables: per setting (a task at its defaults, or a regime) and variant, the mean and
95% interval over seeds of every metric, and paired differences.

    interval(x) = mean(x) +- t(0.975, n - 1) * sd(x) / sqrt(n)        n seeds; half-width nan when n = 1
    paired difference of v to b: d_s = m(v, s) - m(b, s) over the seeds s both ran, then interval(d)

The held-out prompts are balanced over groups; ``eval reward (train mix)`` reweighs the per-group held-out rewards
by the groups' shares of the train prompts (what users of the data as it is would see; eval.json records them,
and for runs made before it did, the task is built once per distinct build to get them). Every metric is
paired with ``grpo`` (``"<metric> - grpo"``); the held-out
reward and worst group also with
the variant's random-label control ``<v>_random`` where that ran (``"<metric> - random labels"``). Where a setting
has specialists (``specialist_<g>``: grpo on group g's prompts alone), every other variant gets its
personalization gap per group, specialist_g - variant_g on g's held-out prompts paired by seed, and the largest
(``personalization gap max``: the interval of the group with the largest mean gap). The **RL's share** of a trained
variant v (``rl share worst group``, ``rl share train mix``) is v's held-out worst-group and train-mix reward minus
those of its untrained reference (``frozen_reference``: the initial policy with the same prompt conditioning),
paired by seed: what RL adds to what the policy does when merely told whom it serves. The **conditioning share**
of a conditioned variant (``conditioning share worst group``, ``... train mix``) is the same difference to the
variant that trains alike without conditioning (``unconditioned``: ``pgrpo_balanced_sampling`` for
``pgrpo_balanced_sampling_prompt``, ``frozen`` for ``frozen_prompt``), paired by seed. ``perplexity ratio to
initial`` is the policy's perplexity over its initial policy's, on held-out real text (else held-out prompts).
The steps a variant takes to reach 90% of grpo's final training reward are the median and range over the seeds that
reached it, with their count (``reach``: a count of steps is skewed and may be missing, so a mean and t-interval would
mislead). Training curves are smoothed by a trailing mean that skips NaN (a group absent from a step's batch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from pgrpo.core.curves import WORST_RUNNING
from pgrpo.experiments.bench.variants import (
    RANDOM_SUFFIX,
    SPECIALIST_PREFIX,
    frozen_reference,
    is_frozen,
    is_specialist,
    unconditioned,
)
from pgrpo.experiments.runs import read_metrics, task_build

Run = dict[str, Any]  # a run's summary.json plus its training curves (load_run)
Interval = tuple[float, float]  # (mean, 95% half-width)
OVERALL, WORST = "eval reward (sampled)", "eval worst group (sampled)"
TRAIN_MIX = "eval reward (train mix)"
TRAIN_MIX_DELTA = "eval train mix - grpo"  # = f"{TRAIN_MIX} - grpo", under the name the bar reads
GAP, GAP_MAX = "personalization gap", "personalization gap max"
RL_SHARE_WORST, RL_SHARE_MIX = "rl share worst group", "rl share train mix"
CONDITIONING_WORST, CONDITIONING_MIX = "conditioning share worst group", "conditioning share train mix"
CAPABILITY = "perplexity ratio to initial"
STEPS_TO_90 = "steps to 90% of grpo final"


def train_mix_reward(run: Run) -> float | None:
    """Held-out reward weighted by the groups' shares of the train prompts: sum_g share_g * reward_g / sum_g share_g.

    The held-out prompts are balanced over groups, so the plain held-out reward weighs every group alike; this is
    what the users of the data as it is (majority first) would see.
    """
    shares, per_group = run.get("train_shares"), run["eval"].get("per_group_sampled")
    if not shares or not per_group:
        return None
    weights = {group: shares.get(group, 0.0) for group in per_group}
    total = sum(weights.values())
    return sum(weights[group] * reward for group, reward in per_group.items()) / total if total else None


def perplexity_ratio(run: Run) -> float | None:
    """Perplexity of the policy over that of the policy it started from, on held-out real text where the task gives
    it (``reference_text``), else on the held-out prompts: > 1 means the policy lost some of its language model."""
    evaluation = run["eval"]
    for policy, initial in (("perplexity_reference_text", "perplexity_reference_text_initial"),
                            ("perplexity", "perplexity_initial")):  # fmt: skip
        if evaluation.get(policy) is not None and evaluation.get(initial):
            return evaluation[policy] / evaluation[initial]
    return None


METRICS: dict[str, Callable[[Run], float | None]] = {
    OVERALL: lambda r: r["eval"].get("reward_sampled"),
    "eval reward (greedy)": lambda r: r["eval"].get("reward_greedy"),
    WORST: lambda r: r["eval"].get("worst_group_sampled"),
    "eval majority-minority gap": lambda r: r["eval"].get("majority_minus_minority_sampled"),
    "train reward AUC": lambda r: float(pd.Series(r["curve"], dtype=float).mean()),  # skips steps without one
    "train final reward": lambda r: r["final_train_reward"],
    "KL to initial": lambda r: r["eval"].get("kl_to_initial"),
    "perplexity": lambda r: r["eval"].get("perplexity"),
    "perplexity, held-out real text": lambda r: r["eval"].get("perplexity_reference_text"),
    "s/step": lambda r: r["seconds_per_step"],
    TRAIN_MIX: train_mix_reward,
    CAPABILITY: perplexity_ratio,
}
RANDOM_LABEL_METRICS = (OVERALL, WORST)


def train_shares(run_dir: Path, cache: dict[str, dict[str, float]]) -> dict[str, float]:
    """Share of each task group (as a string, like eval.json's keys) among the run's task's train prompts, rebuilt
    from the task, for run directories made before eval.json recorded them; empty for a run directory without
    config.yaml (not made by `pgrpo train`)."""
    from pgrpo.tasks import build_task

    if not (run_dir / "config.yaml").is_file():
        return {}
    task, options, seed = task_build(yaml.safe_load((run_dir / "config.yaml").read_text()))
    key = json.dumps([task, options, seed], sort_keys=True)
    if key not in cache:
        cache[key] = {str(info.name): info.share for info in build_task(task, seed=seed, **options).groups}
    return cache[key]


@dataclass
class Setting:
    """The finished runs of one task at its defaults (kind "task") or of one regime ("regime"; "sweep" for the
    regimes of benches made before regimes had names), by variant, one run per seed."""

    name: str
    task: str
    kind: str
    regime: dict[str, Any] | None = None  # the regime's regime.json
    runs: dict[str, list[Run]] = field(default_factory=dict)


def interval(values: Iterable[float | None]) -> Interval:
    """Mean and half-width of the 95% t-interval of the finite values (half-width nan for a single value)."""
    x = pd.Series(list(values), dtype=float).to_numpy()
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def reach(steps: Iterable[float]) -> dict[str, float]:
    """Steps to a threshold over seeds (nan: never reached), as median and range of the seeds that reached it, with
    how many did: a count of steps is skewed and may be missing, so a mean and t-interval would mislead."""
    x = np.asarray(list(steps), dtype=float)
    reached = x[np.isfinite(x)]
    if len(reached) == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "reached": 0, "seeds": len(x)}
    low, median, high = (float(v) for v in np.percentile(reached, [0, 50, 100]))
    return {"median": median, "min": low, "max": high, "reached": len(reached), "seeds": len(x)}


def smooth(curve: Iterable[float | None], width: int = 5) -> np.ndarray:
    """Trailing mean over ``width`` steps skipping NaN; NaN where the window holds no value."""
    return pd.Series(list(curve), dtype=float).rolling(width, min_periods=1).mean().to_numpy()


def steps_to(curve: Iterable[float], threshold: float) -> float:
    """First step (1-based) where the smoothed curve reaches ``threshold``; nan if never."""
    hits = np.flatnonzero(smooth(curve) >= threshold)
    return float(hits[0] + 1) if len(hits) else math.nan


def load_run(run_dir: Path) -> Run:
    """summary.json with the training curves: overall, worst group and per group (the trainer's labels; each group's
    running reward, carried through the steps that did not draw it: pgrpo.core.curves; for runs made before it was
    logged, the per-batch means), and the held-out example completions of eval.json (``examples``)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = pd.DataFrame(read_metrics(run_dir / "metrics.jsonl"))
    running = any(str(c).endswith("/reward_running") for c in metrics.columns)  # else a run made before them:
    suffix, worst = ("/reward_running", WORST_RUNNING) if running else ("/reward_mean", "group/worst_reward_mean")
    group_columns = [c for c in metrics.columns if c.startswith("group/") and c.endswith(suffix)]
    metrics = metrics.astype({c: float for c in ["reward", worst, *group_columns] if c in metrics})
    summary["curve"] = metrics["reward"].tolist() if "reward" in metrics else []  # NaN where TRL logged None
    summary["worst_curve"] = metrics.get(worst, pd.Series(dtype=float)).tolist()
    summary["group_curves"] = {
        column.split("/")[1]: metrics[column].tolist() for column in sorted(group_columns) if column.count("/") == 2
    }
    evaluation = run_dir / "eval.json"
    summary["examples"] = json.loads(evaluation.read_text()).get("examples", []) if evaluation.is_file() else []
    return summary


def collect(root: Path) -> dict[str, Setting]:
    """Every finished run under ``root`` (a bench's runs/ directory), by setting name: a task spec or a regime."""
    settings: dict[str, Setting] = {}
    shares: dict[str, dict[str, float]] = {}  # one task build per distinct (task, seed, options)
    for summary in sorted(root.glob("*/*/*/seed*/summary.json")):
        run_dir = summary.parent
        kind, variant, run = run_dir.parts[-4], run_dir.parts[-2], load_run(run_dir)
        run["train_shares"] = run["eval"].get("train_shares") or train_shares(run_dir, shares)  # older runs: rebuilt
        if kind == "matrix":
            setting = Setting(run["task"], run["task"], "task")
        elif kind == "regimes":
            regime = json.loads((run_dir.parents[1] / "regime.json").read_text())
            setting = Setting(regime["name"], run["task"], "regime", regime)
        else:  # runs/sweep/r<i>/regime.txt
            setting = Setting("sweep: " + (run_dir.parents[1] / "regime.txt").read_text(), run["task"], "sweep")
        settings.setdefault(setting.name, setting).runs.setdefault(variant, []).append(run)
    return settings


def metric_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per seed (the index), one column per metric of METRICS."""
    rows = [{name: get(run) for name, get in METRICS.items()} for run in runs]
    return pd.DataFrame(rows, index=[run["seed"] for run in runs], columns=list(METRICS), dtype=float)


def paired(frame: pd.DataFrame, baseline: pd.DataFrame | None, metric: str) -> Interval:
    """Interval of the per-seed differences ``frame - baseline`` (aligned on seeds) of ``metric``."""
    return (math.nan, math.nan) if baseline is None else interval(frame[metric] - baseline[metric])


def group_rewards(runs: list[Run], group: str) -> pd.Series:
    """Held-out reward (sampled) of ``group`` in each run, indexed by seed (NaN where the run has none)."""
    values = [run["eval"].get("per_group_sampled", {}).get(group, math.nan) for run in runs]
    return pd.Series(values, index=[run["seed"] for run in runs], dtype=float)


def personalization_gaps(runs: list[Run], specialists: dict[str, list[Run]]) -> dict[str, Interval]:
    """{group g: interval over seeds of specialist_g - shared_g}, g's held-out reward under the specialist of g (the
    same policy and budget trained on g's prompts alone) minus under the shared policy, paired by seed on the same
    held-out prompts. Positive: the shared policy serves g worse than a policy of g's own would."""
    return {
        group: interval(group_rewards(specialist, group) - group_rewards(runs, group))
        for group, specialist in sorted(specialists.items())
    }


def largest_gap(gaps: dict[str, Interval]) -> Interval:
    """The interval of the group whose mean personalization gap is largest (nan without specialists)."""
    finite = [gap for gap in gaps.values() if math.isfinite(gap[0])]
    return max(finite, key=lambda gap: gap[0]) if finite else (math.nan, math.nan)


def summarize(runs: dict[str, dict[str, list[Run]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{setting: {variant: [runs]}} -> {setting: {variant: {metric: (mean, half-width), ..., per_group_eval}}}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for setting, by_variant in runs.items():
        frames = {variant: metric_frame(seeds) for variant, seeds in by_variant.items()}
        grpo = frames.get("grpo")
        grpo_curves = [smooth(run["curve"])[-1] for run in by_variant.get("grpo", [])]
        grpo_final = float(np.mean(grpo_curves)) if grpo_curves else math.nan
        specialists = {
            variant.removeprefix(SPECIALIST_PREFIX): seeds
            for variant, seeds in by_variant.items()
            if is_specialist(variant)
        }
        table[setting] = {}
        for variant, seeds in by_variant.items():
            frame, row = frames[variant], {"seeds": len(seeds)}
            for name in METRICS:
                row[name] = interval(frame[name])
                row[f"{name} - grpo"] = (0.0, 0.0) if variant == "grpo" else paired(frame, grpo, name)
            if (control := frames.get(variant + RANDOM_SUFFIX)) is not None:
                for name in RANDOM_LABEL_METRICS:
                    row[f"{name} - random labels"] = paired(frame, control, name)
            row[STEPS_TO_90] = reach(steps_to(run["curve"], 0.9 * grpo_final) for run in seeds)
            groups = pd.DataFrame([run["eval"].get("per_group_sampled", {}) for run in seeds], dtype=float)
            row["per_group_eval"] = {group: interval(groups[group]) for group in sorted(groups.columns)}
            row[TRAIN_MIX_DELTA] = row[f"{TRAIN_MIX} - grpo"]
            # the RL share: what training adds to the same policy untrained (a random-label control starts elsewhere)
            if not (is_frozen(variant) or is_specialist(variant) or variant.endswith(RANDOM_SUFFIX)):
                reference = frames.get(frozen_reference(variant))
                row[RL_SHARE_WORST] = paired(frame, reference, WORST)
                row[RL_SHARE_MIX] = paired(frame, reference, TRAIN_MIX)
            # the conditioning share: what telling the policy whom it serves adds to the same training without it
            if (base := frames.get(unconditioned(variant) or "")) is not None:
                row[CONDITIONING_WORST] = paired(frame, base, WORST)
                row[CONDITIONING_MIX] = paired(frame, base, TRAIN_MIX)
            if specialists and not is_specialist(variant):
                row[GAP] = personalization_gaps(seeds, specialists)
                row[GAP_MAX] = largest_gap(row[GAP])
            table[setting][variant] = row
    return table
