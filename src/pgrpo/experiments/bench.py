"""``pgrpo demo``, ``pgrpo bench`` and ``pgrpo report``: the experiment matrix and what it shows.

A bench is a set of runs (task x variant x seed, plus the personas regime sweep), each a
``pgrpo train`` subprocess with its own run directory under ``<out>/runs/``; runs execute in
parallel up to ``--jobs`` (one torch thread each), finished runs are skipped and unfinished
ones resume, so an interrupted bench continues where it stopped. Every run of a bench gets the
same prompts per step, completions per prompt and steps (matched compute). ``report`` reads the
run directories and writes ``report.md``, ``results.json`` and figures.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pgrpo.cli import Command
from pgrpo.experiments.runs import read_metrics
from pgrpo.tasks.registry import find_task, task_directory_name

# name -> flags of `pgrpo train` that define the variant
VARIANTS: dict[str, dict[str, Any]] = {
    "grpo": {"estimator": "grpo"},
    "dr_grpo": {"estimator": "dr_grpo", "loss_type": "dr_grpo"},  # Dr. GRPO: its advantage and its loss
    "batch_std": {"estimator": "batch_std"},
    "rloo": {"estimator": "rloo"},
    "pgrpo": {"estimator": "pgrpo", "history": "cumulative"},
    "pgrpo_ema": {"estimator": "pgrpo", "history": "ema", "history_decay": 0.99},
    "pgrpo_window": {"estimator": "pgrpo", "history": "window", "history_window": 256},
    "pgrpo_scale": {"estimator": "pgrpo_scale"},
    "pgrpo_random": {"estimator": "pgrpo", "group_labels": "random"},
}
# The personas regime sweep: one factor at a time from the task's defaults (G=4, dense reward, no noise,
# equal reward scales, shares 40/20/15/10/7/4/4%: two 4% minorities).
DEFAULT_SHARES = (0.40, 0.20, 0.15, 0.10, 0.07, 0.04, 0.04)


def minority_shares(share: float) -> list[float]:
    """Personas shares with the two smallest personas at ``share`` each and the other five rescaled."""
    rest = np.array(DEFAULT_SHARES[:5]) / sum(DEFAULT_SHARES[:5]) * (1 - 2 * share)
    return [*rest.round(6).tolist(), share, share]


REGIMES: dict[str, dict[str, Any]] = {
    "base (G=4, minorities 4%)": {},
    "G=2": {"num_generations": 2},
    "G=8": {"num_generations": 8},
    "minorities 2%": {"task_options": {"shares": minority_shares(0.02)}},
    "minorities 25%": {"task_options": {"shares": minority_shares(0.25)}},
    "majority reward x10": {"task_options": {"reward_scale": [10.0, 1, 1, 1, 1, 1, 1]}},
    "reward noise 0.2": {"task_options": {"reward_noise": 0.2}},
    "binary reward": {"task_options": {"binary": True}},
}
SWEEP_VARIANTS = ("grpo", "pgrpo")


@dataclass
class BenchArguments:
    """The benchmark matrix. Any other ``pgrpo train`` flag can be passed through ``train_options``."""

    out: str = field(default="runs/bench", metadata={"help": "Bench directory (runs/, report.md, figures)."})
    tasks: list[str] = field(
        default_factory=lambda: ["personas", "movielens", "reviews"],
        metadata={"help": "Tasks: names, package.module:function or path/to/file.py:function (as `pgrpo train`)."},
    )
    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS), metadata={"help": f"Variants, from: {', '.join(VARIANTS)}."}
    )
    seeds: int = field(default=5, metadata={"help": "Seeds per (task, variant): 0..seeds-1."})
    sweep: bool = field(default=True, metadata={"help": "Also run the personas regime sweep (grpo vs pgrpo)."})
    max_steps: int = field(default=30, metadata={"help": "Optimizer steps per run."})
    prompts_per_step: int = field(default=8, metadata={"help": "Prompts per step (completions = prompts x G)."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt G (the sweep varies it)."})
    eval_prompts: int = field(default=56, metadata={"help": "Held-out prompts evaluated per run."})
    jobs: int = field(default=0, metadata={"help": "Parallel runs (0: one per CPU core)."})
    train_options: str = field(default="{}", metadata={"help": "Extra `pgrpo train` flags as JSON."})


def run_flags(args: BenchArguments, task: str, variant: str, seed: int, regime: dict[str, Any]) -> list[str]:
    """The `pgrpo train` command line of one run."""
    generations = regime.get("num_generations", args.num_generations)
    flags: dict[str, Any] = {
        "task": task,
        "seed": seed,
        "max_steps": args.max_steps,
        "num_generations": generations,
        "per_device_train_batch_size": args.prompts_per_step * generations,
        "eval_prompts": args.eval_prompts,
        "save_steps": max(args.max_steps // 2, 1),
        "disable_tqdm": True,
        **json.loads(args.train_options),
        **VARIANTS[variant],
    }
    if regime.get("task_options"):
        flags["task_options"] = json.dumps(regime["task_options"])
    argv = []
    for key, value in flags.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def planned_runs(args: BenchArguments) -> list[tuple[Path, list[str]]]:
    root = Path(args.out) / "runs"
    if args.sweep:  # each regime's directory names its setting, for the report
        for index, regime in enumerate(REGIMES):
            (root / "sweep" / f"r{index}").mkdir(parents=True, exist_ok=True)
            (root / "sweep" / f"r{index}" / "regime.txt").write_text(regime)
    runs = []
    for seed in range(args.seeds):
        for task in args.tasks:
            for variant in args.variants:
                run_dir = root / "matrix" / task_directory_name(task) / variant / f"seed{seed}"
                runs.append((run_dir, run_flags(args, task, variant, seed, {})))
        if args.sweep:
            for index, settings in enumerate(REGIMES.values()):
                for variant in SWEEP_VARIANTS:
                    run_dir = root / "sweep" / f"r{index}" / variant / f"seed{seed}"
                    runs.append((run_dir, run_flags(args, "personas", variant, seed, settings)))
    return runs


def execute(runs: list[tuple[Path, list[str]]], jobs: int) -> None:
    """Run every unfinished run as a subprocess, ``jobs`` at a time, with a progress bar."""
    todo = [(run_dir, flags) for run_dir, flags in runs if not (run_dir / "summary.json").exists()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; running {len(todo)} with {jobs} job(s).")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def launch(run_dir: Path, flags: list[str]) -> tuple[Path, int]:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with (run_dir.parent / f"{run_dir.name}.log").open("a") as log:
            command = [sys.executable, "-m", "pgrpo", "train", "--run_dir", str(run_dir), *flags]
            return run_dir, subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, run_dir, flags) for run_dir, flags in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run"):
            run_dir, code = future.result()
            if code != 0:
                failures.append(run_dir)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed; see their .log files, e.g. {failures[0]}.log")


# ----------------------------------------------------------------------------- statistics
def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (half-width nan for a single value)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def load_run(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = read_metrics(run_dir / "metrics.jsonl")
    summary["curve"] = [m["reward"] for m in metrics]
    summary["group_curves"] = {
        key.split("/")[1]: [m.get(key) for m in metrics]
        for key in sorted({k for m in metrics for k in m})
        if key.startswith("group/") and key.endswith("/reward_mean") and key.count("/") == 2
    }
    summary["worst_curve"] = [m.get("group/worst_reward_mean") for m in metrics]
    return summary


def smooth(curve: Sequence[float], width: int = 5) -> np.ndarray:
    """Trailing mean over ``width`` steps; NaN (a group absent from those batches) where nothing is there."""
    x = np.asarray(curve, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        return np.array([np.nanmean(x[max(0, i - width + 1) : i + 1]) for i in range(len(x))])


def steps_to(curve: Sequence[float], threshold: float) -> float:
    """First step (1-based) where the smoothed curve reaches ``threshold``; nan if never."""
    hits = np.flatnonzero(smooth(curve) >= threshold)
    return float(hits[0] + 1) if len(hits) else math.nan


METRICS = {
    "eval reward (sampled)": lambda r: r["eval"].get("reward_sampled"),
    "eval reward (greedy)": lambda r: r["eval"].get("reward_greedy"),
    "eval worst group (sampled)": lambda r: r["eval"].get("worst_group_sampled"),
    "eval majority-minority gap": lambda r: r["eval"].get("majority_minus_minority_sampled"),
    "train reward AUC": lambda r: float(np.mean(r["curve"])),
    "train final reward": lambda r: r["final_train_reward"],
    "KL to initial": lambda r: r["eval"].get("kl_to_initial"),
    "perplexity": lambda r: r["eval"].get("perplexity"),
    "s/step": lambda r: r["seconds_per_step"],
}


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """runs[task][variant] = list of run summaries (one per seed) -> per-metric interval and paired diff vs grpo."""
    out: dict[str, Any] = {}
    for task, by_variant in runs.items():
        baseline = {r["seed"]: r for r in by_variant.get("grpo", [])}
        grpo_final = np.mean([smooth(r["curve"])[-1] for r in baseline.values()]) if baseline else math.nan
        out[task] = {}
        for variant, seeds in by_variant.items():
            row: dict[str, Any] = {"seeds": len(seeds)}
            for name, get in METRICS.items():
                row[name] = interval([get(r) for r in seeds])
                pairs = [(get(r), get(baseline[r["seed"]])) for r in seeds if r["seed"] in baseline]
                paired = [a - b for a, b in pairs if a is not None and b is not None]
                row[f"{name} - grpo"] = interval(paired) if variant != "grpo" else (0.0, 0.0)
            row["steps to 90% of grpo final"] = interval([steps_to(r["curve"], 0.9 * grpo_final) for r in seeds])
            groups = sorted({g for r in seeds for g in r["eval"].get("per_group_sampled", {})})
            row["per_group_eval"] = {
                g: interval([r["eval"]["per_group_sampled"].get(g) for r in seeds]) for g in groups
            }
            out[task][variant] = row
    return out


def collect(root: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{task spec or sweep regime: {variant: [run summaries]}} for every finished run under ``root``."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for summary in sorted(root.glob("*/*/*/seed*/summary.json")):
        run_dir = summary.parent
        kind, variant, run = run_dir.parts[-4], run_dir.parts[-2], load_run(run_dir)
        key = run["task"] if kind == "matrix" else "sweep: " + (run_dir.parents[1] / "regime.txt").read_text()
        found.setdefault(key, {}).setdefault(variant, []).append(run)
    return found


# ----------------------------------------------------------------------------- report
def fmt(value: tuple[float, float], digits: int = 3) -> str:
    mean, half = value
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if not math.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def plot_group_curves(runs: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Per-group training reward of each variant (mean over seeds, smoothed), one panel per group.

    Runs with randomly permuted group labels appear in the "all groups" panel only: the trainer logs their
    per-group metrics under the permuted labels (their held-out per-group results use the real groups).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({g for seeds in runs.values() for r in seeds for g in r["group_curves"]})
    panels = [("all groups", "curve"), ("worst group", "worst_curve")] + [(g, g) for g in groups]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharex=True)
    for ax, (label, key) in zip(axes.flat, panels, strict=False):
        for variant, seeds in runs.items():
            if key != "curve" and any(r.get("group_labels", "task") != "task" for r in seeds):
                continue  # its training metrics are keyed by the permuted labels, not by the real groups
            curves = [r[key] if key in ("curve", "worst_curve") else r["group_curves"].get(key, []) for r in seeds]
            length = min(len(c) for c in curves)
            if length == 0:
                continue
            stacked = np.array([[np.nan if v is None else v for v in c[:length]] for c in curves], dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a step no seed saw this group: NaN
                mean = smooth(np.nanmean(stacked, 0), 8)
            ax.plot(np.arange(1, length + 1), mean, label=variant)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.supxlabel("step")
    fig.supylabel("train reward (batch mean, smoothed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(table: dict[str, Any], path: Path) -> None:
    """P-GRPO minus GRPO held-out worst-group reward per regime, paired over seeds, 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [k for k in table if k.startswith("sweep: ") and "pgrpo" in table[k]]
    if not regimes:
        return
    values = [table[k]["pgrpo"]["eval worst group (sampled) - grpo"] for k in regimes]
    means = [v[0] for v in values]
    halves = [0 if not math.isfinite(v[1]) else v[1] for v in values]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(regimes) + 1.5))
    y = np.arange(len(regimes))
    ax.errorbar(means, y, xerr=halves, fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, [k.removeprefix("sweep: ") for k in regimes])
    ax.invert_yaxis()
    ax.set_xlabel("P-GRPO − GRPO, held-out worst-group reward (mean ± 95% CI over seeds)")
    ax.set_title("personas: when does history normalization matter?")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(bench_dir: Path, command: str = "") -> Path:
    """Tables, figures and results.json for every finished run under ``bench_dir/runs``."""
    runs = collect(bench_dir / "runs")
    if not runs:
        raise FileNotFoundError(f"No finished runs under {bench_dir / 'runs'}; run `pgrpo bench --out {bench_dir}`.")
    table = summarize(runs)
    (bench_dir / "results.json").write_text(json.dumps(table, indent=1))
    lines = [f"# pgrpo bench: {bench_dir}", ""]
    if command:
        lines += ["Reproduce with:", "", f"    {command}", ""]
    lines += ["Mean ± 95% t-interval over seeds; `Δ` columns are paired differences to `grpo` (same seed).", ""]
    main = [
        "eval reward (sampled)",
        "eval worst group (sampled)",
        "eval majority-minority gap",
        "train reward AUC",
        "KL to initial",
        "perplexity",
        "s/step",
    ]
    for key in sorted(table, key=lambda k: (k.startswith("sweep"), k)):
        rows = table[key]
        lines += [f"## {key}", ""]
        header = ["variant", "seeds", *main, "Δ eval", "Δ worst group", "steps to 90% grpo"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for variant, row in rows.items():
            cells = [
                variant,
                str(row["seeds"]),
                *[fmt(row[m]) for m in main],
                fmt(row["eval reward (sampled) - grpo"]),
                fmt(row["eval worst group (sampled) - grpo"]),
                fmt(row["steps to 90% of grpo final"], 1),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        groups = sorted({g for row in rows.values() for g in row["per_group_eval"]})
        if groups and not key.startswith("sweep"):
            lines += ["", "Held-out reward per group (sampled):", ""]
            lines += ["| variant | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 1)]
            for variant, row in rows.items():
                lines.append(
                    f"| {variant} | "
                    + " | ".join(fmt(row["per_group_eval"].get(g, (math.nan,) * 2), 2) for g in groups)
                    + " |"
                )
        if not key.startswith("sweep"):
            figure = bench_dir / f"curves_{task_directory_name(key)}.png"
            plot_group_curves(runs[key], figure, f"{key}: per-group training reward")
            lines += ["", f"![{key}]({figure.name})"]
        lines.append("")
    sweep_figure = bench_dir / "sweep.png"
    plot_sweep(table, sweep_figure)
    if sweep_figure.exists():
        lines += ["## Regime sweep (personas)", "", f"![sweep]({sweep_figure.name})", ""]
    report = bench_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


# ----------------------------------------------------------------------------- commands
def command_line(prog: str, args: Any) -> str:
    """``prog`` with the flags of every option of the dataclass ``args`` that differs from its default."""
    flags = []
    for spec in fields(args):
        value = getattr(args, spec.name)
        default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
        if value != default:
            values = value if isinstance(value, list) else [value]
            flags.append(f"--{spec.name} " + " ".join(shlex.quote(str(v)) for v in values))
    return " ".join([prog, *flags])


def prebuild_policies(builds: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Build (or find cached) the warm-started tiny policy of each (task, options) once, before parallel runs."""
    from pgrpo.models import policy_path
    from pgrpo.tasks import build_task

    done = set()
    for task, options in builds:
        start = time.perf_counter()
        path = policy_path(build_task(task, seed=0, **options), "tiny")
        if path not in done:
            print(f"tiny {task} policy ready in {time.perf_counter() - start:.0f} s: {path}")
            done.add(path)


def bench(args: BenchArguments) -> int:
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"Unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}.")
    for task in args.tasks:
        find_task(task)  # a misspelt or broken task fails here, not in every run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_line("pgrpo bench", args)
    start = time.perf_counter()
    if json.loads(args.train_options).get("model_name_or_path", "tiny") == "tiny":
        regimes = [regime.get("task_options", {}) for regime in REGIMES.values()] if args.sweep else []
        prebuild_policies([(task, {}) for task in args.tasks] + [("personas", options) for options in regimes])
    execute(planned_runs(args), args.jobs or os.cpu_count() or 1)
    (out / "wall_time.txt").write_text(f"{time.perf_counter() - start:.0f} s for the runs executed by the last call\n")
    print(f"report: {write_report(out, command)}")
    return 0


@dataclass
class ReportArguments:
    bench_dir: str = field(
        default="runs/bench", metadata={"help": "Bench directory; report.md, results.json and figures go there."}
    )


def report(args: ReportArguments) -> int:
    print(f"report: {write_report(Path(args.bench_dir))}")
    return 0


@dataclass
class DemoArguments:
    out: str = field(default="runs/demo", metadata={"help": "Demo directory."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps per run."})
    seeds: int = field(default=2, metadata={"help": "Seeds per estimator (runs go two at a time on two cores)."})


def demo(args: DemoArguments) -> int:
    """GRPO vs P-GRPO on personas with the tiny model: summary table + per-group reward curves."""
    matrix = BenchArguments(
        out=args.out,
        tasks=["personas"],
        variants=["grpo", "pgrpo"],
        seeds=args.seeds,
        sweep=False,
        max_steps=args.max_steps,
    )
    start = time.perf_counter()
    prebuild_policies([("personas", {})])
    execute(planned_runs(matrix), matrix.jobs or os.cpu_count() or 1)
    report_path = write_report(Path(args.out), command_line("pgrpo demo", args))
    table = summarize(collect(Path(args.out) / "runs"))["personas"]
    print_summary(table)
    print(
        f"\nMeans over {args.seeds} seed(s). With 5 seeds (docs/results/README.md) P-GRPO's held-out gains on personas"
    )
    print("stay inside seed noise, and P-GRPO with randomly permuted group labels does as well.")
    figure = report_path.parent / "curves_personas.png"
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {report_path}; figure: {figure}")
    return 0


def print_summary(table: dict[str, Any]) -> None:
    groups = sorted({g for row in table.values() for g in row["per_group_eval"]})
    header = f"{'estimator':<10} {'overall':>8} {'worst':>8} {'steps>90%':>9} " + " ".join(
        f"{g[:8]:>8}" for g in groups
    )
    print("\nHeld-out reward (sampled completions), personas, tiny policy")
    print(header)
    for variant, row in table.items():
        cells = " ".join(f"{row['per_group_eval'].get(g, (math.nan,))[0]:>8.3f}" for g in groups)
        print(
            f"{variant:<10} {row['eval reward (sampled)'][0]:>8.3f} {row['eval worst group (sampled)'][0]:>8.3f} "
            f"{row['steps to 90% of grpo final'][0]:>9.0f} {cells}"
        )


DEMO = Command(arguments=(DemoArguments,), run=demo)
BENCH = Command(arguments=(BenchArguments,), run=bench)
REPORT = Command(arguments=(ReportArguments,), run=report, positional=("bench_dir",))
