"""Exact resume after a hard kill: SIGKILL a training process between checkpoints, resume in a new process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pgrpo.trainer.trainer import STATS_FILE
from tests.reliability.helpers import (
    REPO,
    checkpoint_step,
    last_complete_checkpoint,
    model_parameters,
    run_checked,
    script_env,
    tail,
    toy_train_command,
)

MAX_STEPS = 5
ROWS_PER_STEP = 8  # per_device_train_batch_size (completions), one process


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before it could be killed:\n{tail(log)}"
        assert time.monotonic() < deadline, f"timed out waiting for the run:\n{tail(log)}"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize(
    "group_options",
    [(), ("--alpha", 0, "--weighting", "worst_group"), ("--conditioning", "prompt+adapter")],
    ids=["plain", "group", "adapter"],
)
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(
    toy_model_dir: str, tmp_path: Path, group_options: tuple
) -> None:
    """Also with group-balanced sampling (its draws follow the seed and epoch), worst-group weights (saved) and a
    LoRA adapter per group (saved in every checkpoint beside the shared weights)."""
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    env = script_env()
    with (tmp_path / "reference.log").open("w") as reference_log, (tmp_path / "killed.log").open("w") as killed_log:
        reference = subprocess.Popen(
            toy_train_command(toy_model_dir, reference_dir, "--max-steps", MAX_STEPS, *group_options),
            cwd=REPO,
            env=env,
            stdout=reference_log,
            stderr=subprocess.STDOUT,
        )
        # checkpoint every step; a pause after each step keeps the run alive long enough to kill it mid-way
        killed = subprocess.Popen(
            toy_train_command(
                toy_model_dir, run_dir, "--max-steps", MAX_STEPS, "--save-steps", 1, "--step-sleep", 0.3, *group_options
            ),
            cwd=REPO,
            env=env,
            stdout=killed_log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: (run_dir / "checkpoint-2" / "trainer_state.json").exists(), killed, tmp_path / "killed.log"
            )
            time.sleep(random.Random(0).uniform(0.0, 0.3))  # an arbitrary moment, possibly in the middle of a save
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.wait()
        assert killed.returncode == -signal.SIGKILL
        assert not (run_dir / "final").exists()

        checkpoint = last_complete_checkpoint(run_dir)
        assert checkpoint is not None and 2 <= checkpoint_step(checkpoint) < MAX_STEPS
        saved = json.loads((checkpoint / STATS_FILE).read_text())
        assert sum(saved["tracker"]["count"]) == checkpoint_step(checkpoint) * ROWS_PER_STEP
        assert saved["group_column"] == "group"

        resume = toy_train_command(
            toy_model_dir, run_dir, "--max-steps", MAX_STEPS, "--save-steps", 1, "--resume", checkpoint, *group_options
        )
        run_checked(resume, tmp_path / "resumed.log")
        assert reference.wait(timeout=300) == 0, tail(tmp_path / "reference.log")

    expected = json.loads((reference_dir / "final" / STATS_FILE).read_text())
    assert json.loads((run_dir / "final" / STATS_FILE).read_text()) == expected
    assert sum(expected["tracker"]["count"]) == MAX_STEPS * ROWS_PER_STEP
    if "--weighting" in group_options:  # the weights moved, so their exact resume is not trivial
        assert any(value != 0 for value in expected["weighting"]["log_weights"])
    reference_parameters, resumed_parameters = (
        model_parameters(reference_dir / "final"),
        model_parameters(run_dir / "final"),
    )
    assert reference_parameters.keys() == resumed_parameters.keys()
    for name, value in reference_parameters.items():
        assert torch.equal(resumed_parameters[name], value), name
    initial = model_parameters(Path(toy_model_dir))
    assert any(not torch.equal(initial[name], value) for name, value in reference_parameters.items() if name in initial)
    if "--conditioning" in group_options:  # both groups' adapters trained (B starts at 0), so resuming them matters
        for group in ("group_big", "group_small"):
            assert any(
                v.abs().sum() > 0
                for k, v in reference_parameters.items()
                if k.startswith(f"{group}/") and "lora_B" in k
            )
