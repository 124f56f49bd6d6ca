"""Running a bench's runs: ``jobs`` worker processes, each running ``pgrpo train`` runs one after another.

A worker is a fresh Python process (spawned, one torch thread) that imports torch, transformers and TRL once
and then runs its share of the runs in-process, each exactly as ``pgrpo train <flags>`` would (the trainer
seeds everything it draws from the run's own seeds, and every run builds its task anew), so a run's results
do not depend on which worker ran it or what ran before. Starting a process per run would cost ~8 s of
imports each. A run whose ``summary.json`` exists is finished and skipped; any other resumes from its last
checkpoint (``pgrpo train`` does that), so a bench started again continues where it stopped. Each run's
output goes to ``<run_dir>.log``. The tiny policies and discovered labels are built before the pool starts, once
per task build, so that parallel runs find them cached instead of each building its own.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from pgrpo.core.conditioning import GroupConditioning
from pgrpo.experiments.bench.plan import PlannedRun, task_builds
from pgrpo.experiments.runs import changes_results
from pgrpo.tasks.base import Task

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def same_setting(recorded: Any, planned: Any) -> bool:
    """Whether a value in a run's config.yaml and a value the bench gives as a flag are the same setting (texts read
    as JSON where they are, numbers by value, lists item by item)."""
    if isinstance(recorded, list) or isinstance(planned, list):
        recorded, planned = list(recorded or []), list(planned or [])
        return len(recorded) == len(planned) and all(map(same_setting, recorded, planned))
    recorded, planned = json_value(recorded), json_value(planned)
    numbers = [isinstance(v, int | float) and not isinstance(v, bool) for v in (recorded, planned)]
    return float(recorded) == float(planned) if all(numbers) else recorded == planned


def json_value(value: Any) -> Any:
    """``value`` read as JSON if it is a text that is JSON (a flag's dict, number or boolean), else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def stale_runs(runs: list[PlannedRun]) -> list[str]:
    """The finished runs whose config.yaml records another value for a flag the bench now gives them (what a run logs
    and saves aside; its steps and evaluation included), each as "run_dir (flag: recorded -> planned)". A flag is the
    field of that name in every section of config.yaml (``pgrpo train`` sets them all)."""
    stale = []
    for run in runs:
        config = run.run_dir / "config.yaml"
        if not (run.run_dir / "summary.json").exists() or not config.is_file():
            continue
        recorded: dict[str, list[tuple[str, Any]]] = {}
        for section, fields in yaml.safe_load(config.read_text()).items():
            for field, value in (fields or {}).items():
                recorded.setdefault(field, []).append((f"{section}.{field}", value))
        changed = (
            f"{run.run_dir} ({flag}: {value!r} -> {planned!r})"
            for flag, planned in run.flags.items()
            for key, value in recorded.get(flag, [])
            if changes_results(key) and not same_setting(value, planned)
        )
        if (first := next(changed, None)) is not None:
            stale.append(first)
    return stale


def execute(runs: list[PlannedRun], jobs: int) -> None:
    """Run every unfinished run, ``jobs`` at a time in worker processes, with a progress bar. A finished run made
    with other settings than the bench now gives it is refused (:func:`stale_runs`), never reported as the bench's."""
    if stale := stale_runs(runs):
        raise ValueError(
            f"{len(stale)} finished run(s) were made with other settings than this bench gives them, e.g. {stale[0]}; "
            "give the bench another --out, or move those run directories away (nothing was changed)."
        )
    todo = [run for run in runs if not (run.run_dir / "summary.json").exists()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; running {len(todo)} with {jobs} job(s).")
    if not todo:
        return
    os.environ.update(ONE_THREAD)  # inherited by the workers before they import torch
    failures = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=start_worker) as pool:
        futures = [pool.submit(run_in_worker, str(run.run_dir), run.argv()) for run in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run"):
            run_dir, ok = future.result()
            if not ok:
                failures.append(run_dir)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed; see their .log files, e.g. {failures[0]}.log")


def start_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_in_worker(run_dir: str, argv: list[str]) -> tuple[str, bool]:
    """``pgrpo train --run_dir run_dir <argv>`` in this process, its output (file descriptors 1 and 2) in the log."""
    from pgrpo.command import run_command
    from pgrpo.experiments.train import TRAIN

    log_path = Path(f"{run_dir}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    with log_path.open("a") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            ok = run_command("train", TRAIN, argv) == 0
        except BaseException:  # the run failed; its traceback goes to its log and the bench reports it
            traceback.print_exc()
            ok = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in enumerate(saved, start=1):
                os.dup2(copy, fd)
                os.close(copy)
            gc.collect()
    return run_dir, ok


def prebuild(runs: list[PlannedRun]) -> None:
    """Build each task build once, before parallel runs would each do it, and with it what its runs need that is
    cached across runs: the tiny policy (runs on ``model_name_or_path`` tiny) and the discovered labels (runs on
    ``group_labels`` discovered)."""
    from pgrpo.experiments.labels import discovered_labels
    from pgrpo.experiments.train import policy_task
    from pgrpo.models import policy_path
    from pgrpo.tasks import build_task

    on_tiny = [run for run in runs if run.flags.get("model_name_or_path", "tiny") == "tiny"]
    tiny = task_builds(on_tiny)
    discovered = task_builds([run for run in runs if run.flags.get("group_labels") == "discovered"])
    policies = set()
    for build in [*tiny, *(build for build in discovered if build not in tiny)]:
        task, options, seed = build
        start = time.perf_counter()
        built = build_task(task, seed=seed, **options)
        for labels, conditioning in warm_starts(on_tiny, build, built):
            if (
                path := policy_path(policy_task(built, labels, built.group_column, conditioning), "tiny")
            ) not in policies:
                print(f"tiny {task} policy ready in {time.perf_counter() - start:.0f} s: {path}")
                policies.add(path)
        if build in discovered:
            start = time.perf_counter()
            groups = len(set(discovered_labels(built, built.group_column, seed=0)))
            print(f"discovered {groups} {task} groups in {time.perf_counter() - start:.0f} s")


def warm_starts(runs: list[PlannedRun], build: tuple, task: Task) -> list[tuple[str, GroupConditioning]]:
    """The (group labels, conditioning) of the tiny policies that the runs on ``build`` (``task``) start from, each
    once (the task's descriptions where a run gives none, as `pgrpo train` does)."""
    found: dict[str, tuple[str, GroupConditioning]] = {}
    for run in runs:
        if task_builds([run]) != [build]:
            continue
        conditioning = GroupConditioning.from_settings(run.flags, task.group_descriptions)
        labels = run.flags.get("group_labels", "task")
        found.setdefault(f"{labels} {conditioning.prompt}", (labels, conditioning))
    return list(found.values())
