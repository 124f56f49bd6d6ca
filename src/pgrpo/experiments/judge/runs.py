"""The run directories a judgement compares: their task build (config.yaml) and their final/ policies' answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgrpo.experiments.runs import task_build
from pgrpo.models.serving import read_run_config, serve

TASK_KEYS = ("task", "task_options", "task_seed")  # what fixes the held-out prompts


def run_task_spec(run_dir: Path) -> dict[str, Any]:
    """``{"task", "task_options", "task_seed", "max_completion_length"}`` of a run directory's config.yaml."""
    config = read_run_config(run_dir)
    task, options, seed = task_build(config)
    return {
        "task": task,
        "task_options": options,
        "task_seed": seed,
        "max_completion_length": config["trainer"].get("max_completion_length"),
    }


def same_task_spec(spec_a: dict[str, Any], spec_b: dict[str, Any], run_a: Path, run_b: Path) -> None:
    """Raise ValueError unless both runs were trained on the same task build (held-out prompts identical)."""
    differing = [key for key in TASK_KEYS if spec_a[key] != spec_b[key]]
    if differing:
        detail = "; ".join(f"{key}: {spec_a[key]!r} vs {spec_b[key]!r}" for key in differing)
        raise ValueError(
            f"Runs {run_a} and {run_b} are on different tasks ({detail}). Pairwise judging needs the same task, "
            "task options and task seed, so both policies answer the same held-out prompts."
        )


def generate_for_run(
    run_dir: Path, prompts: list[str], groups: list[str], max_new_tokens: int, do_sample: bool, seed: int
) -> list[str]:
    """Completions of the run's final/ policy for ``prompts`` asked by users of ``groups``, in one seeded batch,
    each conditioned as in training and as ``pgrpo generate`` answers it (:func:`pgrpo.models.serving.serve`: its
    group's text in the prompt, its adapter routed; through the chat template if the model has one)."""
    served = serve(run_dir)
    return served.answer(prompts, groups, max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed)
