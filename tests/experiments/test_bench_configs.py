"""The shipped bench configurations parse, plan what they say, and run (on a CPU, at a tiny size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pgrpo.cli import main
from pgrpo.experiments.bench.plan import BenchArguments, planned_runs

GPU_HEADLINE = Path(__file__).resolve().parents[2] / "configs" / "bench" / "gpu_headline.yaml"
SMOLLM2_CPU = GPU_HEADLINE.with_name("smollm2_cpu.yaml")
SMOLLM2_PERSONALIZATION = GPU_HEADLINE.with_name("smollm2_personalization.yaml")


def test_gpu_headline_plans_the_comparison_with_longer_training(tmp_path: Path) -> None:
    settings = yaml.safe_load(GPU_HEADLINE.read_text())
    runs = planned_runs(BenchArguments(**{**settings, "out": str(tmp_path)}))
    assert len(runs) == 3 * 5 * 10  # tasks x variants x seeds
    assert {run.flags["max_steps"] for run in runs} == {200}
    sampled = [run for run in runs if run.flags.get("group_sampling_alpha") == 0.0]
    assert {run.flags.get("group_labels", "task") for run in sampled} == {"task", "random"}


def test_smollm2_cpu_plans_lora_runs_of_the_measured_size(tmp_path: Path) -> None:
    settings = yaml.safe_load(SMOLLM2_CPU.read_text())
    runs = planned_runs(BenchArguments(**{**settings, "out": str(tmp_path)}))
    assert len(runs) == 5 * 5 and settings["jobs"] == 2  # variants x seeds, two at a time on two cores
    for run in runs:
        assert run.flags["model_name_or_path"] == "smollm2" and run.flags["use_peft"] is True
        assert (run.flags["lora_r"], run.flags["max_completion_length"], run.flags["max_steps"]) == (16, 32, 15)
        assert run.flags["per_device_train_batch_size"] == 8 * 4  # 8 prompts x 4 completions: the benchmarked step
    sampled = [run for run in runs if run.flags.get("group_sampling_alpha") == 0.0]
    assert {run.flags.get("group_labels", "task") for run in sampled} == {"task", "random"}
    conditioned = [run for run in runs if run.flags.get("group_conditioning") == "prompt"]
    assert len(conditioned) == 5 and all(run.flags["group_sampling_alpha"] == 0.0 for run in conditioned)


def test_smollm2_personalization_plans_every_reference_of_issue_22(tmp_path: Path) -> None:
    settings = yaml.safe_load(SMOLLM2_PERSONALIZATION.read_text())
    runs = planned_runs(BenchArguments(**{**settings, "out": str(tmp_path)}))
    by_setting: dict[str, set[str]] = {}
    for run in runs:
        by_setting.setdefault(run.run_dir.parts[-3], set()).add(run.run_dir.parts[-2])
    specialists = {"tones": {"delighted", "mixed", "disappointed"}, "reviews": {"1", "2", "3", "4", "5"}}
    for task, groups in specialists.items():  # >= 2 settings, each with its references and a specialist per group
        assert by_setting[task] == set(settings["variants"]) | {f"specialist_{g}" for g in groups}
    assert {"frozen", "frozen_prompt", "grpo", "pgrpo_balanced_sampling_prompt_random"} <= set(settings["variants"])
    assert settings["seeds"] >= 4 and settings["specialist_seeds"] >= 3
    for run in runs:
        assert run.flags["model_name_or_path"] == "smollm2" and run.flags["use_peft"] is True
        frozen = run.run_dir.parts[-2].startswith("frozen")
        assert run.flags["learning_rate"] == (0.0 if frozen else 0.001)
        assert run.flags["max_steps"] == (0 if frozen else settings["max_steps"])
        assert run.flags["disable_dropout"] is True  # same-start references: no variant keeps LoRA dropout
    adapters = [run for run in runs if run.flags.get("group_conditioning") == "adapter"]
    assert len(adapters) == 2 * 4 and all(run.flags["group_sampling_alpha"] == 0.0 for run in adapters)


@pytest.mark.slow
def test_gpu_headline_runs_on_a_cpu_at_a_tiny_size(toy_model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    options = {"model_name_or_path": toy_model_dir, "max_completion_length": 4, "eval_samples": 1}
    tiny = ["--out", str(out), "--tasks", "personas", "--seeds", "1", "--max_steps", "2", "--prompts_per_step", "2",
            "--eval_prompts", "7", "--jobs", "2", "--train_options", json.dumps(options)]  # fmt: skip
    assert main(["bench", "--config", str(GPU_HEADLINE), *tiny]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["personas"]) == set(yaml.safe_load(GPU_HEADLINE.read_text())["variants"])
    assert "grpo_balanced_sampling" in results["bar"]
