"""One training run = one directory.

    runs/<name>/
        config.yaml      resolved run arguments + every PGRPOConfig field
        metrics.jsonl    one JSON line per log step (appended, never truncated; a resumed run
                         appends again from its checkpoint, readers keep the last line per step)
        checkpoints/     TRL checkpoints, each with pgrpo_group_stats.json
        final/           the trained policy (model + tokenizer)
        eval.json        held-out evaluation (pgrpo.experiments.evaluation)
        summary.json     written last: the run is finished

An existing finished run is never overwritten without ``overwrite=True``; an unfinished one
resumes from its last checkpoint, provided its config is the same.
"""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from pgrpo.cli import Command
from pgrpo.experiments.evaluation import evaluate_policy
from pgrpo.models import policy_path
from pgrpo.tasks import Task, build_task
from pgrpo.tasks.registry import task_directory_name
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer

RANDOM_GROUP_COLUMN = "random_group"


@dataclass
class RunArguments:
    """What to train on, besides the trainer config (``PGRPOConfig``)."""

    task: str = field(
        default="personas",
        metadata={
            "help": "Task: personas, movielens, reviews, an installed task's name, package.module:function or "
            "path/to/file.py:function (`pgrpo tasks` lists them with their options)."
        },
    )
    task_options: str = field(
        default="{}", metadata={"help": "Task builder options as JSON, e.g. '{\"reward_noise\": 0.1}'."}
    )
    task_seed: int = field(
        default=0,
        metadata={"help": "Seed of the task build (data split, prompts, tiny policy); --seed drives training."},
    )
    model: str = field(
        default="tiny",
        metadata={"help": "Policy: 'tiny' (built from the task, cached), 'smollm2', or a model path / hub id."},
    )
    run_dir: str = field(default="", metadata={"help": "Run directory (default: runs/<task>-<estimator>-s<seed>)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing finished run directory."})
    random_groups: bool = field(
        default=False,
        metadata={"help": "Normalize with randomly permuted group labels (the paper's ablation); rewards unchanged."},
    )
    eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts to evaluate on (0 skips evaluation)."})
    eval_samples: int = field(default=4, metadata={"help": "Sampled completions per held-out prompt."})

    def options(self) -> dict[str, Any]:
        options = json.loads(self.task_options) if isinstance(self.task_options, str) else dict(self.task_options)
        if not isinstance(options, dict):
            raise ValueError(f"task_options must be a JSON object, got {self.task_options!r}.")
        if "seed" in options:
            raise ValueError("task_options holds 'seed'; the task's seed is --task_seed (training's is --seed).")
        return options


class MetricsLog(TrainerCallback):
    """Appends every TRL log entry (with its step) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_time = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        entry = {"step": state.global_step, "wall_time": now - self.last_time, **logs}
        self.last_time = now
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=float) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Training log lines of a run, one per step (the last written wins after a resume)."""
    by_step: dict[int, dict[str, Any]] = {}
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        entry = json.loads(line)
        if "loss" in entry:
            by_step[entry["step"]] = entry
    return [by_step[step] for step in sorted(by_step)]


def with_random_groups(dataset: Dataset, group_column: str, seed: int) -> Dataset:
    """Add a column with the group labels randomly permuted across rows (sizes kept, meaning lost)."""
    labels = list(dataset[group_column])
    random.Random(seed).shuffle(labels)
    return dataset.add_column(RANDOM_GROUP_COLUMN, labels)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prepare_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool) -> bool:
    """Create ``run_dir`` or check it can be resumed. Returns True when resuming."""
    config_path = run_dir / "config.yaml"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    elif (run_dir / "summary.json").exists():
        raise FileExistsError(
            f"Run directory {run_dir} holds a finished run; pass --overwrite to replace it or choose another --run_dir."
        )
    elif config_path.exists():
        saved = yaml.safe_load(config_path.read_text())
        if saved != resolved:
            old, new = flatten(saved), flatten(resolved)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"Run directory {run_dir} holds an unfinished run with another config (differs in {changed}); "
                "resume with the same arguments, pass --overwrite, or choose another --run_dir."
            )
        return True
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} exists and is not a pgrpo run directory; choose another --run_dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(resolved, sort_keys=True))
    return False


def resolve(run: RunArguments, config: PGRPOConfig) -> dict[str, Any]:
    """Everything that defines the run, as plain YAML-able values."""
    trainer_fields = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
    trainer_fields = json.loads(json.dumps(trainer_fields, default=str))
    for volatile in ("output_dir", "logging_dir"):
        trainer_fields.pop(volatile, None)
    return {"run": asdict(run), "trainer": trainer_fields}


def default_run_dir(run: RunArguments, config: PGRPOConfig) -> Path:
    suffix = "-random" if run.random_groups else ""
    return Path("runs") / f"{task_directory_name(run.task)}-{config.estimator}{suffix}-s{config.seed}"


def train(run: RunArguments, config: PGRPOConfig, task: Task | None = None) -> dict[str, Any]:
    """Train one policy with ``config`` on ``run.task`` and evaluate it; returns the summary."""
    run_dir = Path(run.run_dir) if run.run_dir else default_run_dir(run, config)
    task = task or build_task(run.task, seed=run.task_seed, **run.options())
    config.group_column = RANDOM_GROUP_COLUMN if run.random_groups else task.group_column
    config.output_dir = str(run_dir / "checkpoints")
    state = PartialState()  # under torchrun / accelerate launch only the main process prepares the directory
    with state.main_process_first():
        if state.is_main_process:
            resuming = prepare_run_dir(run_dir, resolve(run, config), run.overwrite)
        else:
            resuming = not run.overwrite and (run_dir / "checkpoints").exists()
    train_dataset = task.train_dataset
    if run.random_groups:
        train_dataset = with_random_groups(train_dataset, task.group_column, config.seed)

    model_path = policy_path(task, run.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = tokenizer.chat_template is not None  # instruct models get the task prompt as a user message
    if chat:
        train_dataset = train_dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    trainer = PGRPOTrainer(
        model=model_path,
        reward_funcs=task.reward_fn,
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=[MetricsLog(run_dir / "metrics.jsonl")],
    )
    checkpoint = get_last_checkpoint(config.output_dir) if resuming and Path(config.output_dir).exists() else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - start
    trainer.save_model(str(run_dir / "final"))  # on every process: ZeRO-3 / FSDP gather the weights collectively

    evaluation: dict[str, Any] = {}
    if run.eval_prompts > 0 and trainer.accelerator.is_main_process:
        reference = AutoModelForCausalLM.from_pretrained(model_path)
        evaluation = evaluate_policy(
            trainer.model,
            tokenizer,
            task,
            reference,
            run.eval_prompts,
            run.eval_samples,
            config.max_completion_length,
            config.seed,
            chat,
        )
        (run_dir / "eval.json").write_text(json.dumps(evaluation, indent=2))
    metrics = read_metrics(run_dir / "metrics.jsonl")
    summary = {
        "task": run.task,
        "estimator": config.estimator,
        "history": config.history,
        "random_groups": run.random_groups,
        "seed": config.seed,
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(trainer.state.global_step, 1),
        "final_train_reward": float(np.mean([m["reward"] for m in metrics[-5:]])) if metrics else math.nan,
        "group_history": {str(k): v for k, v in trainer.advantage_engine.tracker.summary().items()},
        "eval": {k: v for k, v in evaluation.items() if k != "examples"},
        "resumed": resuming,
    }
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if accelerator.num_processes > 1:
        del trainer  # the DDP wrapper holds the process group: free it first, else gloo threads may abort the exit
        gc.collect()
        accelerator.end_training()  # destroys the process group
    return summary


def cpu_friendly_defaults() -> dict[str, Any]:
    """`pgrpo train` defaults for the tiny task models; TRL's own suit billion-parameter models on GPUs."""
    gpu = torch.cuda.is_available()
    return {
        "per_device_train_batch_size": 32,
        "num_generations": 4,
        "max_completion_length": 24,
        "learning_rate": 5e-4,
        "max_steps": 60,
        "beta": 0.0,
        "bf16": gpu,
        "use_cpu": not gpu,
        "gradient_checkpointing": False,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 20,
        "save_total_limit": 2,
        "seed": 0,
        "output_dir": "runs/_unused",
    }


def train_command(run: RunArguments, config: PGRPOConfig) -> int:
    summary = train(run, config)
    print(f"finished {summary['steps']} steps; eval: {summary['eval']}")
    return 0


TRAIN = Command(arguments=(RunArguments, PGRPOConfig), run=train_command, defaults=cpu_friendly_defaults)
