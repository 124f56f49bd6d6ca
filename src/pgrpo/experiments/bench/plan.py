"""What a bench runs: ``BenchArguments`` -> runs, each a directory and the flags of its ``pgrpo train``.

    <out>/runs/matrix/<task>/<variant>/seed<n>/     --tasks x --variants, each task at its defaults
    <out>/runs/regimes/<regime>/<variant>/seed<n>/  --regimes x each regime's variants; regime.json says which
    .../specialist_<group>/seed<n>/                 in every task and regime: grpo on that group's train
                                                    prompts alone, evaluated on its held-out prompts
                                                    (seeds 0..specialist_seeds-1)

Every run uses seeds 0..seeds-1 (listed seed by seed, so an interrupted bench holds whole seeds; within a seed
the longest first: :func:`longest_first`), the same steps, prompts per step and held-out prompts (matched
compute; a regime may change completions per prompt).
A run's flags come from four sources: the bench's own settings (BENCH_SETS), ``--train_options``, the
variant and the regime. A flag set by two of them is an error that names where it belongs, never a silent
override; ``task_options`` of ``--train_options`` reach every run and add to a regime's, a key both set
being an error too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgrpo.experiments.bench.regimes import PERSONALIZATION_REGIMES, REGIMES, Regime
from pgrpo.experiments.bench.variants import (
    PERSONALIZATION_VARIANTS,
    RANDOM_SUFFIX,
    VARIANTS,
    is_frozen,
    specialist_name,
    variant_flags,
)
from pgrpo.tasks.registry import check_options, find_task, task_directory_name

NO_REGIMES = NO_TASKS = "none"
REGIMES_HELP = f"Regimes, each with its own variants, from: {', '.join(REGIMES)}; {NO_REGIMES!r} for none."
# `pgrpo train` flags that the bench sets for every run -> how to change them
BENCH_SETS = {
    "task": "--tasks (or a regime's task)",
    "seed": "--seeds (every run uses seeds 0..seeds-1)",
    "max_steps": "--max_steps",
    "num_generations": "--num_generations (or a regime's flags)",
    "per_device_train_batch_size": "--prompts_per_step (completions per step = prompts x num_generations)",
    "eval_prompts": "--eval_prompts",
    "run_dir": "--out (runs live in <out>/runs/)",
    "save_steps": "no flag (the bench checkpoints at half of --max_steps, to resume from)",
}


@dataclass
class BenchArguments:
    """The benchmark matrix. Other ``pgrpo train`` flags go in ``train_options``."""

    out: str = field(default="runs/bench", metadata={"help": "Bench directory (runs/, report.md, figures)."})
    tasks: list[str] = field(
        default_factory=lambda: ["personas", "movielens", "reviews"],
        metadata={
            "help": "Tasks: names, package.module:function or path/to/file.py:function (as `pgrpo train`); "
            "none for none."
        },
    )
    variants: list[str] = field(
        default_factory=lambda: list(PERSONALIZATION_VARIANTS),
        metadata={
            "help": f"Variants run on every task, from: {', '.join(VARIANTS)}, or <variant>{RANDOM_SUFFIX} (the same "
            "flags on randomly permuted group labels)."
        },
    )
    regimes: list[str] = field(
        default_factory=lambda: list(PERSONALIZATION_REGIMES),
        metadata={"help": REGIMES_HELP.replace("%", "%%")},  # argparse formats help with %
    )
    regime_variants: list[str] = field(
        default_factory=list,
        metadata={"help": "Variants run in every selected regime instead of each regime's own (default: its own)."},
    )
    seeds: int = field(default=10, metadata={"help": "Seeds of every (task or regime, variant): 0..seeds-1."})
    specialist_seeds: int = field(
        default=5,
        metadata={
            "help": "Seeds of the specialists (grpo on one group's prompts alone, per group of every task and regime: "
            "the reference of the personalization gap); 0 runs none."
        },
    )
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps per run."})
    prompts_per_step: int = field(default=8, metadata={"help": "Prompts per step (completions = prompts x G)."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt G (a regime may set its own)."})
    eval_prompts: int = field(
        default=210,
        metadata={"help": "Held-out prompts per run, round-robin over groups (210: 30 per persona, 42 per group of 5)"},
    )
    jobs: int = field(default=0, metadata={"help": "Parallel runs (0: one per CPU core)."})
    train_options: str = field(
        default="{}",
        metadata={"help": "Other `pgrpo train` flags as JSON, for every run (not flags the bench or a variant sets)."},
    )


@dataclass(frozen=True)
class PlannedRun:
    """One ``pgrpo train`` of a bench: its run directory and flags (``--run_dir`` is the directory)."""

    run_dir: Path
    flags: dict[str, Any]

    def argv(self) -> list[str]:
        """The flags as ``pgrpo train`` arguments: booleans lowercase, lists as several values, dicts as JSON."""
        argv = ["--run_dir", str(self.run_dir)]
        for key, value in self.flags.items():
            values = value if isinstance(value, list) else [value]
            argv += [f"--{key}", *(flag_text(v) for v in values)]
        return argv


def flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, dict) else str(value)


def selected_regimes(args: BenchArguments) -> list[Regime]:
    if args.regimes == [NO_REGIMES]:
        return []
    if unknown := [name for name in args.regimes if name not in REGIMES]:
        raise ValueError(f"Unknown regime(s) {unknown}; choose from {', '.join(REGIMES)}, or {NO_REGIMES!r}.")
    chosen = tuple(args.regime_variants)
    return [dataclasses.replace(REGIMES[name], variants=chosen or REGIMES[name].variants) for name in args.regimes]


def train_options(args: BenchArguments, regimes: list[Regime]) -> dict[str, Any]:
    """``--train_options`` as a dict (its ``task_options`` a dict too), refusing a flag the bench, a variant that
    runs or a selected regime sets."""
    options = json.loads(args.train_options)
    if not isinstance(options, dict):
        raise ValueError(f"--train_options must be a JSON object of `pgrpo train` flags, got {args.train_options!r}.")
    task_options = options.get("task_options", {})
    task_options = json.loads(task_options) if isinstance(task_options, str) else task_options
    running = dict.fromkeys([*args.variants, *(name for regime in regimes for name in regime.variants)])
    variants = {name: variant_flags(name) for name in running}  # an unknown name fails here; only these can clash
    for key in [key for key in options if key != "task_options"]:
        if key in BENCH_SETS:
            raise ValueError(f"--train_options sets {key!r}, which the bench sets for all runs; use {BENCH_SETS[key]}.")
        # the untrained references' learning rate 0 is what makes them untrained; a bench's learning rate is the rest's
        frozen_rate = key == "learning_rate"
        if setters := [
            name for name, flags in variants.items() if key in flags and not (frozen_rate and is_frozen(name))
        ]:
            raise ValueError(
                f"--train_options sets {key!r}, which variant(s) {', '.join(setters)} set: a variant is its flags. "
                "Choose variants with --variants, or add one to VARIANTS in pgrpo.experiments.bench.variants."
            )
        if setters := [regime.name for regime in regimes if key in regime.flags]:
            raise ValueError(f"--train_options sets {key!r}, which regime(s) {', '.join(setters)} set; leave it out.")
    for regime in regimes:
        if both := sorted(set(task_options) & set(regime.task_options)):
            raise ValueError(
                f"--train_options task_options set {both}, which regime {regime.name} sets; leave them out or "
                f"--regimes without {regime.name}."
            )
    return {**options, "task_options": task_options}


def check_regime(regime: Regime) -> None:
    """A regime's flags may set num_generations but nothing else the bench sets, and nothing its variants set."""
    if clash := sorted(set(regime.flags) & (set(BENCH_SETS) - {"num_generations"})):
        raise ValueError(f"Regime {regime.name} sets {clash}, which the bench sets for every run; see BENCH_SETS.")
    for variant in regime.variants:
        if clash := sorted(set(regime.flags) & set(variant_flags(variant))):
            raise ValueError(f"Regime {regime.name} sets {clash}, which its variant {variant} sets too.")


def run_flags(
    args: BenchArguments, task: str, variant: str, seed: int, options: dict[str, Any], regime: Regime | None
) -> dict[str, Any]:
    """The ``pgrpo train`` flags of one run (module docstring; ``options`` = checked ``--train_options``)."""
    regime_flags = dict(regime.flags) if regime else {}
    generations = regime_flags.pop("num_generations", args.num_generations)
    task_options = {**options["task_options"], **(regime.task_options if regime else {})}
    flags = {
        "disable_tqdm": True,
        **{key: value for key, value in options.items() if key != "task_options"},
        **variant_flags(variant),
        **regime_flags,
        "task": task,
        "seed": seed,
        "max_steps": 0 if is_frozen(variant) else args.max_steps,  # 0: the initial policy, evaluated untrained
        "num_generations": generations,
        "per_device_train_batch_size": args.prompts_per_step * generations,
        "eval_prompts": args.eval_prompts,
        "save_steps": max(args.max_steps // 2, 1),
    }
    if task_options:
        flags["task_options"] = json.dumps(task_options)
    return flags


def task_groups(task: str, task_seed: int, task_options: str) -> list[str]:
    """The group labels of ``task`` built with ``task_seed`` and ``task_options`` (JSON), as ``--train_group``
    takes them."""
    from pgrpo.tasks import build_task

    return [str(info.name) for info in build_task(task, seed=task_seed, **json.loads(task_options)).groups]


def specialist_runs(setting: Path, seed: int, flags: dict[str, Any], groups: list[str]) -> list[PlannedRun]:
    """The specialists of one setting and seed: ``flags`` (grpo's) on each group's train prompts alone."""
    return [
        PlannedRun(setting / specialist_name(group) / f"seed{seed}", {**flags, "train_group": group})
        for group in groups
    ]


def planned_runs(args: BenchArguments) -> list[PlannedRun]:
    """Every run of the bench, seed by seed: the task matrix, then each regime, then the specialists of each
    (module docstring)."""
    regimes = selected_regimes(args)
    for regime in regimes:
        check_regime(regime)
    options = train_options(args, regimes)
    root = Path(args.out) / "runs"
    settings: list[tuple[Path, str, Regime | None, tuple[str, ...]]] = [
        (root / "matrix" / task_directory_name(task), task, None, tuple(args.variants))
        for task in args.tasks
        if task != NO_TASKS
    ] + [(root / "regimes" / regime.directory, regime.task, regime, regime.variants) for regime in regimes]
    groups_of = functools.cache(task_groups)  # one build per setting, not per seed
    runs = []
    for seed in range(max(args.seeds, args.specialist_seeds)):
        seed_runs = []
        for directory, task, regime, variants in settings:
            if seed < args.seeds:
                for variant in variants:
                    flags = run_flags(args, task, variant, seed, options, regime)
                    seed_runs.append(PlannedRun(directory / variant / f"seed{seed}", flags))
            if seed < args.specialist_seeds:
                flags = run_flags(args, task, "grpo", seed, options, regime)
                groups = groups_of(task, flags.get("task_seed", 0), flags.get("task_options", "{}"))
                seed_runs += specialist_runs(directory, seed, flags, groups)
        runs += longest_first(seed_runs)
    return runs


def longest_first(runs: list[PlannedRun]) -> list[PlannedRun]:
    """``runs`` with the longest expected first (otherwise in order): more training steps first, per-group adapters
    (the slowest step) before other runs of as many steps, specialists (fewer held-out prompts) after shared runs.
    Workers take runs in this order, so a bench ends on short untrained references instead of one long run alone."""

    def expected_length(run: PlannedRun) -> tuple[int, bool, bool]:
        flags = run.flags
        return -int(flags.get("max_steps", 0)), flags.get("group_conditioning") != "adapter", "train_group" in flags

    return sorted(runs, key=expected_length)


def task_builds(runs: list[PlannedRun]) -> list[tuple[str, dict[str, Any], int]]:
    """The distinct task builds (task, options, task seed) of ``runs``, each checked against its task's options."""
    keys = dict.fromkeys(
        (run.flags["task"], run.flags.get("task_options", "{}"), run.flags.get("task_seed", 0)) for run in runs
    )
    builds = [(task, json.loads(options), seed) for task, options, seed in keys]
    for task, options, _ in builds:
        check_options(find_task(task), options)  # a misspelt task or option fails here, not in every run
    return builds


def record_regimes(args: BenchArguments) -> None:
    """Write each selected regime's regime.json (what the report reads); refuse a regime whose task, options or
    flags changed since its runs were made (they would be skipped as finished and reported as the new one)."""
    for regime in selected_regimes(args):
        path = Path(args.out) / "runs" / "regimes" / regime.directory / "regime.json"
        record = json.loads(json.dumps(asdict(regime)))
        if path.exists():
            saved = json.loads(path.read_text())
            identity = ("task", "task_options", "flags")
            if any(saved.get(key) != record[key] for key in identity):
                raise ValueError(
                    f"Regime {regime.name} is no longer what its runs in {path.parent} were made with ({saved}); "
                    "give the changed regime a new name, or move that directory away."
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
