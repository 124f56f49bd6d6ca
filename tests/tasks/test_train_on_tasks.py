"""Every task trains by name in one call with its own warm-started tiny policy (built and cached offline)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgrpo.cli import main
from pgrpo.experiments.runs import read_metrics
from pgrpo.tasks import build_task

TRAIN = ["--max_steps", "3", "--per_device_train_batch_size", "16", "--eval_prompts", "10", "--eval_samples", "1",
         "--disable_tqdm", "true"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("task", ["personas", "movielens", "reviews"])
def test_pgrpo_trains_on_each_task_by_name(task: str, tmp_path: Path) -> None:
    run_dir = tmp_path / task
    assert main(["train", "--task", task, "--run_dir", str(run_dir), *TRAIN]) == 0
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert len(metrics) == 3 and all(math.isfinite(m["loss"]) for m in metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    labels = {str(info.name) for info in build_task(task).groups}
    assert set(summary["group_history"]) <= labels and sum(h["count"] for h in summary["group_history"].values()) == 48
    low, high = build_task(task).reward_range
    assert low <= summary["eval"]["reward_sampled"] <= high


@pytest.mark.slow
def test_first_train_on_an_empty_cache_builds_the_policy_and_trains_in_one_process(tmp_path: Path) -> None:
    """What a newcomer runs first: a fresh process, an empty model cache, `pgrpo train`."""
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    env = {**os.environ, "PGRPO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pgrpo", "train", "--task", "reviews", "--run_dir", str(run_dir), *TRAIN]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert [p.name.split("-")[1] for p in cache.glob("tiny-*")] == ["reviews"]  # built in that same process
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3
