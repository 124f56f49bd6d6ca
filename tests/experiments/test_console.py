"""What the commands print: aligned tables, and one short line per logged training step with the progress bar."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerControl, TrainerState

from pgrpo.experiments.console import ProgressLines, text_table


def test_a_table_aligns_its_columns_and_marks_missing_numbers() -> None:
    rows = {"grpo": {"overall": 0.5, "steps": "20.5 (1–40)"}, "pgrpo_balanced": {"overall": math.nan, "extra": 3}}
    assert text_table(rows, "variant").splitlines() == [
        "variant         overall        steps  extra",
        "grpo              0.500  20.5 (1–40)      –",
        "pgrpo_balanced        –            –      3",
    ]


def test_with_the_progress_bar_a_logged_step_is_one_short_line(capsys: pytest.CaptureFixture[str]) -> None:
    """As transformers calls it: every metric TRL logs (about 60) reaches on_log; one line comes out."""
    callback, state, control = ProgressLines(), TrainerState(global_step=3, max_steps=10), TrainerControl()
    callback.on_train_begin(None, state, control)
    logs = {"loss": 0.5, "reward": 0.25, "group/worst_reward_running": 0.125, "kl": 0.001}
    callback.on_log(None, state, control, logs={**logs, **{f"completions/metric_{i}": 1.0 for i in range(60)}})
    callback.on_log(None, state, control, logs={"eval_loss": 1.5})  # not a training step: as transformers has it
    callback.on_log(None, state, control, logs={"train_runtime": 1.5, "train_loss": 0.5})  # the end of training
    callback.on_train_end(None, state, control)
    out = capsys.readouterr().out
    assert "step 3/10  reward 0.250  worst group 0.125  loss 0.5000  kl 0.0010\n" in out
    assert "completions/metric_" not in out and "{'eval_loss': '1.5'}" in out
    assert "train_runtime" not in out  # `pgrpo train`'s report says steps and time
