"""`pgrpo train` honours or refuses every trainer and model flag it could otherwise override: group column, output
directory, report_to, and TRL's ModelConfig (LoRA: train, checkpoint, exact resume, the saved adapter loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pgrpo.cli import main
from pgrpo.experiments.runs import read_metrics
from tests.experiments.test_cli import train_argv


def test_group_column_flag_is_honoured(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = train_argv(toy_model_dir, run_dir, "--group_column", "target_rating")
    argv[argv.index("personas")] = "reviews"  # reviews rows carry `group` and `target_rating` (both the rating)
    assert main(argv) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["group_column"] == "target_rating"
    stats = json.loads((run_dir / "checkpoints" / "checkpoint-2" / "pgrpo_group_stats.json").read_text())
    assert stats["group_column"] == "target_rating" and set(stats["tracker"]["labels"]) <= {1, 2, 3, 4, 5}


def test_a_group_column_the_task_lacks_is_an_error_listing_its_columns(toy_model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--group_column 'rating_x'.*no such column.*\['prompt', 'group'"):
        main(train_argv(toy_model_dir, tmp_path / "run", "--group_column", "rating_x"))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_output_dir_is_refused_with_the_flag_to_use(toy_model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pass --run_dir elsewhere instead of --output_dir"):
        main(train_argv(toy_model_dir, tmp_path / "run", "--output_dir", "elsewhere"))


def test_report_to_tensorboard_writes_into_the_run_directory(toy_model_dir: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    assert main(train_argv(toy_model_dir, run_dir, "--report_to", "tensorboard")) == 0
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert "train/reward" in tags and any(tag.startswith("train/group/") for tag in tags)
    assert len(events.Scalars("train/reward")) == 2


LORA = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
        "--lora_target_modules", "q_proj", "v_proj", "--save_steps", "2", "--max_steps", "4"]  # fmt: skip


@pytest.mark.slow
def test_lora_trains_checkpoints_resumes_exactly_and_its_adapter_loads(toy_model_dir: str, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    full, interrupted = tmp_path / "full", tmp_path / "interrupted"

    def argv(run_dir: Path) -> list[str]:
        argv = train_argv(toy_model_dir, run_dir, *LORA, "--learning_rate", "0.01", "--max_completion_length", "6")
        argv[argv.index("personas")] = "pgrpo.testing:toy_task"  # a task the toy model can earn rewards on
        return argv

    assert main(argv(full)) == 0
    assert main(argv(interrupted)) == 0
    for leftover in ("summary.json", "final", "checkpoints/checkpoint-4"):  # as if killed after checkpoint-2
        path = interrupted / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(argv(interrupted)) == 0
    assert json.loads((interrupted / "summary.json").read_text())["resumed"]

    adapter = load_file(full / "final" / "adapter_model.safetensors")
    assert adapter.keys() == load_file(interrupted / "final" / "adapter_model.safetensors").keys()
    for name, value in load_file(interrupted / "final" / "adapter_model.safetensors").items():
        assert torch.equal(value, adapter[name]), name
    assert not (full / "final" / "model.safetensors").exists()  # only the adapter is saved
    assert any("lora_B" in name and value.abs().sum() > 0 for name, value in adapter.items())  # it learned
    stats = [json.loads((d / "checkpoints" / "checkpoint-4" / "pgrpo_group_stats.json").read_text()) for d in
             (full, interrupted)]  # fmt: skip
    assert stats[0] == stats[1]

    model = AutoPeftModelForCausalLM.from_pretrained(full / "final")
    weights = dict(model.named_parameters())
    for name, value in adapter.items():
        loaded = next(v for k, v in weights.items() if k.replace(".default", "") == name)
        assert torch.equal(loaded.detach(), value), name
    generated = model.generate(torch.tensor([[3, 4]]), max_new_tokens=3, do_sample=False)
    assert generated[0, :2].tolist() == [3, 4] and generated.shape[1] > 2


def test_resume_from_checkpoint_flag_starts_a_new_run_from_another_runs_checkpoint(
    toy_model_dir: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(train_argv(toy_model_dir, first)) == 0
    checkpoint = first / "checkpoints" / "checkpoint-2"
    assert main(train_argv(toy_model_dir, second, "--max_steps", "3", "--resume_from_checkpoint", str(checkpoint))) == 0
    assert [m["step"] for m in read_metrics(second / "metrics.jsonl")] == [3]  # continued after step 2
    stats = json.loads((second / "checkpoints" / "checkpoint-3" / "pgrpo_group_stats.json").read_text())
    assert sum(stats["tracker"]["count"]) == 3 * 8  # the first run's two batches, then one more


def test_eval_strategy_evaluates_the_held_out_prompts_during_training(toy_model_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(train_argv(toy_model_dir, run_dir, "--eval_strategy", "steps", "--eval_steps", "1",
                           "--per_device_eval_batch_size", "8")) == 0  # fmt: skip
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [e for e in entries if "eval_reward" in e]
    assert [e["step"] for e in evaluations] == [1, 2]
    assert any(key.startswith("eval_group/") for key in evaluations[0])  # per-group metrics, eval mode
    stats = json.loads((run_dir / "checkpoints" / "checkpoint-2" / "pgrpo_group_stats.json").read_text())
    assert sum(stats["tracker"]["count"]) == 2 * 8  # evaluation never entered the statistics


NAN_TASK = '''
import math
from dataclasses import replace

from pgrpo.testing import toy_task


def build(seed: int = 0):
    """The toy task with a reward that returns NaN for every completion."""
    return replace(toy_task(seed), reward_fn=lambda completions, **_: [math.nan] * len(completions))
'''


def test_a_reward_that_is_always_nan_finishes_the_run_and_counts_what_it_dropped(
    toy_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nan_task.py").write_text(NAN_TASK)
    run_dir = tmp_path / "run"
    argv = train_argv(toy_model_dir, run_dir, "--eval_prompts", "4", "--eval_samples", "2")
    argv[argv.index("personas")] = f"{tmp_path / 'nan_task.py'}:build"
    assert main(argv) == 0  # was: ValueError: max() arg is an empty sequence, after training, no summary.json
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["per_group_nonfinite_sampled"] == {"big": 4, "small": 4}  # 2 prompts x 2 samples per group
    assert evaluation["per_group_nonfinite_greedy"] == {"big": 2, "small": 2}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(summary["nonfinite_train_rewards"].values()) == 2 * 8  # every reward of both steps
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert all(m.get("group/big/nonfinite_rewards", 0) + m.get("group/small/nonfinite_rewards", 0) == 8
               for m in metrics)  # fmt: skip
    assert all(m["group/big/reward_mean"] is None for m in metrics)  # no mean (was 0)
