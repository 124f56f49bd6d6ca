"""The bench's worker processes run many runs each; a run's results must not depend on the worker or on what it
ran before: a worker's second run equals the same run made alone by `pgrpo train` in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pgrpo.experiments.bench.execution import execute, prebuild, same_setting, stale_runs
from pgrpo.experiments.bench.plan import PlannedRun
from pgrpo.experiments.labels import discovered_labels
from pgrpo.tasks import build_task

VOLATILE = ("train_seconds", "seconds_per_step", "eval_seconds", "resumed")


def flags(model_dir: str, seed: int, **extra) -> dict:
    return {"task": "pgrpo.testing:toy_task", "model_name_or_path": model_dir, "seed": seed, "max_steps": 3,
            "per_device_train_batch_size": 8, "max_completion_length": 6, "learning_rate": 0.01, "eval_prompts": 8,
            "eval_samples": 2, "disable_tqdm": True, **extra}  # fmt: skip


def results(run_dir: Path) -> tuple[dict, dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in VOLATILE}, load_file(run_dir / "final" / "model.safetensors")


def test_a_finished_run_made_with_other_settings_is_refused_and_kept(toy_model_dir: str, tmp_path: Path) -> None:
    run = PlannedRun(tmp_path / "run", flags(toy_model_dir, seed=0, estimator="grpo", max_steps=1))
    execute([run], jobs=1)
    summary = (run.run_dir / "summary.json").read_text()
    assert stale_runs([run]) == []  # the same flags (their numbers, lists and JSON as the run recorded them)
    changed = PlannedRun(run.run_dir, {**run.flags, "learning_rate": 0.02})
    assert stale_runs([changed]) == [f"{run.run_dir} (learning_rate: 0.01 -> 0.02)"]
    with pytest.raises(ValueError, match=r"1 finished run\(s\) were made with other settings .*another --out"):
        execute([changed], jobs=1)
    assert (run.run_dir / "summary.json").read_text() == summary  # nothing is lost
    assert stale_runs([PlannedRun(run.run_dir, {**run.flags, "estimator": "pgrpo"})])
    longer = PlannedRun(run.run_dir, {**run.flags, "max_steps": 2})
    assert stale_runs([longer]) == [f"{run.run_dir} (max_steps: 1 -> 2)"]  # its results are of 1 step
    evaluated = PlannedRun(run.run_dir, {**run.flags, "eval_prompts": 6})
    assert stale_runs([evaluated]) == [f"{run.run_dir} (eval_prompts: 8 -> 6)"]
    logged = PlannedRun(run.run_dir, {**run.flags, "logging_steps": 5, "report_to": "tensorboard"})
    assert stale_runs([logged]) == []  # what it logs changes no result


def test_a_flag_is_compared_with_its_own_field_not_a_nested_one_of_the_same_name(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")
    config = {"model": {"dtype": "float32"}, "trainer": {"learning_rate": 0.01, "model_init_kwargs": {"dtype": "bf16"}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert stale_runs([PlannedRun(run_dir, {"dtype": "float32", "learning_rate": 0.01})]) == []
    assert stale_runs([PlannedRun(run_dir, {"dtype": "bf16"})]) == [f"{run_dir} (dtype: 'float32' -> 'bf16')"]
    nested = PlannedRun(run_dir, {"model_init_kwargs": '{"dtype": "float16"}'})  # a JSON flag, compared whole
    recorded, planned = "{'dtype': 'bf16'}", """'{"dtype": "float16"}'"""
    assert stale_runs([nested]) == [f"{run_dir} (model_init_kwargs: {recorded} -> {planned})"]


def test_recorded_and_planned_settings_compare_by_value() -> None:
    assert same_setting(0.0, 0) and same_setting(1, 1.0) and not same_setting(0.001, 0.002)
    assert same_setting('{"num_train": 700}', {"num_train": 700}) and same_setting("{}", "{}")
    assert not same_setting('{"num_train": 700}', '{"num_train": 600}')
    assert same_setting(["q_proj", "v_proj"], ["q_proj", "v_proj"]) and not same_setting(["q_proj"], ["v_proj"])
    assert same_setting("{description}", "{description}") and not same_setting(False, True)
    assert not same_setting(None, 0.0)


@pytest.mark.slow
def test_a_workers_second_run_equals_the_same_run_alone(toy_model_dir: str, tmp_path: Path) -> None:
    first = PlannedRun(tmp_path / "worker" / "first", flags(toy_model_dir, seed=1, estimator="grpo"))
    second = PlannedRun(tmp_path / "worker" / "second", flags(toy_model_dir, seed=0, group_weighting="worst_group"))
    execute([first, second], jobs=1)  # one worker: `second` runs after `first`, in the same process
    alone = PlannedRun(tmp_path / "alone", second.flags)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pgrpo", "train", *alone.argv()]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)

    summary, weights = results(second.run_dir)
    summary_alone, weights_alone = results(alone.run_dir)
    assert summary == summary_alone
    assert weights.keys() == weights_alone.keys()
    for name, value in weights.items():
        assert torch.equal(value, weights_alone[name]), name
    assert summary["final_train_reward"] > 0  # the runs learned, so equality is not trivial
    assert "Traceback" not in (tmp_path / "worker" / "second.log").read_text()


def test_a_failed_run_is_reported_with_its_log(toy_model_dir: str, tmp_path: Path) -> None:
    broken = PlannedRun(tmp_path / "broken", flags(toy_model_dir, seed=0, estimator="no-such-estimator"))
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed; see their .log files, e.g. .*broken.log"):
        execute([broken], jobs=1)
    assert "Unknown advantage estimator 'no-such-estimator'" in (tmp_path / "broken.log").read_text()


@pytest.mark.slow
def test_prebuild_makes_what_the_runs_share_once_per_task_build(
    toy_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGRPO_CACHE", str(tmp_path / "cache"))
    small = {"task": "personas", "task_options": json.dumps({"num_train": 140, "num_eval": 7})}
    runs = [
        PlannedRun(tmp_path / "a", {**small, "model_name_or_path": toy_model_dir, "group_labels": "discovered"}),
        PlannedRun(tmp_path / "b", {**small, "model_name_or_path": toy_model_dir, "group_labels": "discovered"}),
        PlannedRun(tmp_path / "c", {**small, "seed": 3}),  # the same task build on the tiny policy
        PlannedRun(tmp_path / "d", {"task": "personas", "model_name_or_path": toy_model_dir}),  # needs nothing
    ]
    prebuild(runs)
    printed = capsys.readouterr().out
    assert printed.count("tiny personas policy ready") == 1 and printed.count("discovered 7 personas groups") == 1
    cached = sorted(path.name.split("-")[0] for path in (tmp_path / "cache").iterdir())
    assert cached == ["groups", "tiny"]  # nothing for run d's build (the default personas task)
    (groups,) = (tmp_path / "cache").glob("groups-personas-*")
    labels = json.loads((groups / "train_groups.json").read_text())
    assert len(labels) == 140 and len(set(labels)) == 7
    task = build_task("personas", num_train=140, num_eval=7)
    assert discovered_labels(task, "group", seed=0) == labels  # a run reads the cached groups
