"""Running a bench's runs: ``pgrpo train`` subprocesses, ``jobs`` at a time, one torch thread each.

A run whose ``summary.json`` exists is finished and skipped; any other resumes from its last checkpoint
(``pgrpo train`` does that), so a bench started again continues where it stopped. Each run's output goes
to ``<run_dir>.log``. The tiny policies are built before the pool starts, once per task build, so that
parallel runs find them cached instead of each building its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pgrpo.experiments.bench.plan import PlannedRun


def execute(runs: list[PlannedRun], jobs: int) -> None:
    """Run every unfinished run as a subprocess, ``jobs`` at a time, with a progress bar."""
    todo = [run for run in runs if not (run.run_dir / "summary.json").exists()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; running {len(todo)} with {jobs} job(s).")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def launch(run: PlannedRun) -> tuple[Path, int]:
        run.run_dir.parent.mkdir(parents=True, exist_ok=True)
        with (run.run_dir.parent / f"{run.run_dir.name}.log").open("a") as log:
            command = [sys.executable, "-m", "pgrpo", "train", *run.argv()]
            return run.run_dir, subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, run) for run in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run"):
            run_dir, code = future.result()
            if code != 0:
                failures.append(run_dir)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed; see their .log files, e.g. {failures[0]}.log")


def prebuild_policies(builds: list[tuple[str, dict[str, Any], int]]) -> None:
    """Build (or find cached) the tiny policy of each task build (task, options, task seed)."""
    from pgrpo.models import policy_path
    from pgrpo.tasks import build_task

    done = set()
    for task, options, seed in builds:
        start = time.perf_counter()
        path = policy_path(build_task(task, seed=seed, **options), "tiny")
        if path not in done:
            print(f"tiny {task} policy ready in {time.perf_counter() - start:.0f} s: {path}")
            done.add(path)
