"""The run directories a judgement compares: their task build (config.yaml) and their final/ policies' answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pgrpo.experiments.runs import task_build

TASK_KEYS = ("task", "task_options", "task_seed")  # what fixes the held-out prompts


def run_task_spec(run_dir: Path) -> dict[str, Any]:
    """``{"task", "task_options", "task_seed", "max_completion_length"}`` of a run directory's config.yaml."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a pgrpo run directory (no config.yaml).")
    if not (run_dir / "final").is_dir():
        raise FileNotFoundError(f"{run_dir} has no final/ policy; the run has not finished training.")
    config = yaml.safe_load(config_path.read_text())
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
    """Completions of the run's final/ policy for ``prompts`` asked by users of ``groups`` (through its chat template
    if it has one; seeded). A run trained with group conditioning answers each group as ``pgrpo generate`` does (its
    text in the prompt, its adapter), group by group; any other run answers all prompts in one go."""
    import torch

    from pgrpo.experiments.generate import generate_for_group, run_config
    from pgrpo.models import generate_completions, load_policy

    if run_config(run_dir)["trainer"].get("group_conditioning", "none") != "none":
        answers = [""] * len(prompts)
        for group in dict.fromkeys(groups):
            rows = [i for i, label in enumerate(groups) if label == group]
            asked = [prompts[i] for i in rows]
            group_answers = generate_for_group(run_dir, group, asked, max_new_tokens, do_sample, seed)
            for i, answer in zip(rows, group_answers, strict=True):
                answers[i] = answer
        return answers
    model, tokenizer = load_policy(None, str(run_dir / "final"))
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    chat = tokenizer.chat_template is not None  # as in training: instruct models get a user message
    torch.manual_seed(seed)
    return generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=do_sample, chat=chat
    )
