"""``pgrpo bench``, ``pgrpo report`` and ``pgrpo demo``."""

from __future__ import annotations

import math
import os
import shlex
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from pgrpo.command import Command
from pgrpo.experiments.bench.execution import execute, prebuild
from pgrpo.experiments.bench.plan import NO_REGIMES, BenchArguments, planned_runs, record_regimes, task_builds
from pgrpo.experiments.bench.report import fmt_reach, write_report
from pgrpo.experiments.bench.statistics import OVERALL, STEPS_TO_90, WORST, collect, summarize
from pgrpo.experiments.console import text_table


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


def run_bench(args: BenchArguments, command: str) -> Path:
    """Plan (every check before any run), build tiny policies, run what is unfinished, write the report."""
    runs = planned_runs(args)
    task_builds(runs)  # every task build's options are checked before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_regimes(args)
    start = time.perf_counter()
    prebuild(runs)
    execute(runs, args.jobs or os.cpu_count() or 1)
    (out / "wall_time.txt").write_text(f"{time.perf_counter() - start:.0f} s for the runs executed by the last call\n")
    return write_report(out, command)


def bench(args: BenchArguments) -> int:
    print(f"report: {run_bench(args, command_line('pgrpo bench', args))}")
    return 0


@dataclass
class ReportArguments:
    bench_dir: str = field(
        default="runs/bench", metadata={"help": "Bench directory; report.md, results.json and figures go there."}
    )


def report(args: ReportArguments) -> int:
    print(f"report: {write_report(Path(args.bench_dir))}")
    return 0


DEMO_VARIANTS = ("grpo", "pgrpo", "pgrpo_balanced_sampling")


@dataclass
class DemoArguments:
    out: str = field(default="runs/demo", metadata={"help": "Demo directory."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps per run."})
    seeds: int = field(default=2, metadata={"help": "Seeds per variant (runs go two at a time on two cores)."})


def demo(args: DemoArguments) -> int:
    """GRPO, P-GRPO and P-GRPO with group-balanced sampling on personas with the tiny policy: a per-group table
    of held-out reward and per-group reward curves."""
    matrix = BenchArguments(
        out=args.out,
        tasks=["personas"],
        variants=list(DEMO_VARIANTS),
        regimes=[NO_REGIMES],
        seeds=args.seeds,
        specialist_seeds=0,
        max_steps=args.max_steps,
    )
    start = time.perf_counter()
    report_path = run_bench(matrix, command_line("pgrpo demo", args))
    print_summary(summarize({name: s.runs for name, s in collect(Path(args.out) / "runs").items()})["personas"])
    print(
        f"\nMeans over {args.seeds} seed(s), which cannot settle a comparison: the published results "
        "(docs/results/group_options/README.md) use 10 seeds and 95% intervals on three tasks."
    )
    figure = report_path.parent / "curves_personas.png"
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {report_path}; figure: {figure}")
    return 0


def print_summary(rows: dict[str, Any]) -> None:
    groups = sorted({g for row in rows.values() for g in row["per_group_eval"]})
    cells = {
        variant: {"overall": row[OVERALL][0], "worst": row[WORST][0], "steps>90%": fmt_reach(row[STEPS_TO_90])}
        | {group: row["per_group_eval"].get(group, (math.nan,))[0] for group in groups}
        for variant, row in rows.items()
    }
    print("\nHeld-out reward (sampled completions), personas, tiny policy")
    print(text_table(cells, "variant"))


DEMO = Command(arguments=(DemoArguments,), run=demo)
BENCH = Command(arguments=(BenchArguments,), run=bench)
REPORT = Command(arguments=(ReportArguments,), run=report, positional=("bench_dir",))
