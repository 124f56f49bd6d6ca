"""``pgrpo train``: one policy trained on a task with ``PGRPOTrainer``, evaluated, in one run directory.

Options come in three dataclasses, as in TRL's own scripts: :class:`RunArguments` (what to train
on), ``PGRPOConfig`` (TRL's ``GRPOConfig`` + P-GRPO) and TRL's ``ModelConfig`` (the policy:
``model_name_or_path``, ``dtype``, ``attn_implementation``, and LoRA through ``use_peft``,
``lora_r``, ``lora_alpha``, ...). The run directory layout is in :mod:`pgrpo.experiments.runs`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, get_peft_config, get_quantization_config

from pgrpo.command import Command
from pgrpo.core.conditioning import GroupConditioning, check_descriptions
from pgrpo.experiments.console import run_report, short_step_logs
from pgrpo.experiments.evaluation import evaluate_policy
from pgrpo.experiments.labels import LABEL_SOURCES, with_labels
from pgrpo.experiments.runs import (
    CurrentSchedule,
    MetricsLog,
    mark_resume,
    prepare_run_dir,
    read_metrics,
    resolve,
)
from pgrpo.models import policy_path
from pgrpo.tasks import Task, build_task
from pgrpo.tasks.registry import task_directory_name
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.trainer import check_group_column, condition_prompts

UNSET_OUTPUT_DIR = "runs/_unset"  # `pgrpo train` keeps checkpoints in <run_dir>/checkpoints; see check_flags
# initial policy path -> its perplexity per tuple of held-out texts: a bench worker evaluates every run of a setting
# against the same initial policy on the same rows, and scores them once
INITIAL_PERPLEXITY: dict[str, dict[tuple[str, ...], float]] = {}


@dataclass
class RunArguments:
    """What to train on, besides the trainer config (``PGRPOConfig``) and the policy (``ModelConfig``)."""

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
    run_dir: str = field(default="", metadata={"help": "Run directory (default: runs/<task>-<estimator>-s<seed>)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing finished run directory."})
    group_labels: str = field(
        default="task",
        metadata={
            "help": "Labels the trainer groups by: task (the task's groups), random (permuted: the paper's ablation), "
            "merged (groups paired by size: half as many) or discovered (k-means of the prompt text). Rewards and "
            "held-out per-group results always use the task's groups.",
            "choices": list(LABEL_SOURCES),
        },
    )
    train_group: str = field(
        default="",
        metadata={
            "help": "Train on this group's prompts alone (a specialist: the reference a shared policy is measured "
            "against for that group) and evaluate on its held-out prompts."
        },
    )
    eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts to evaluate on (0 skips evaluation)."})
    eval_samples: int = field(default=4, metadata={"help": "Sampled completions per held-out prompt."})
    eval_greedy: bool = field(
        default=True, metadata={"help": "Also evaluate a greedy completion per held-out prompt (reward_greedy)."}
    )
    eval_kl_samples: int = field(
        default=0, metadata={"help": "Estimate the KL to the initial policy on this many samples per prompt (0: all)."}
    )
    eval_prompt_perplexity: bool = field(
        default=True,
        metadata={"help": "Also the perplexity of the held-out prompts (the real-text probe is separate)."},
    )

    def options(self) -> dict[str, Any]:
        options = json.loads(self.task_options) if isinstance(self.task_options, str) else dict(self.task_options)
        if not isinstance(options, dict):
            raise ValueError(f"task_options must be a JSON object, got {self.task_options!r}.")
        if "seed" in options:
            raise ValueError("task_options holds 'seed'; the task's seed is --task_seed (training's is --seed).")
        return options


def cpu_friendly_defaults() -> dict[str, Any]:
    """`pgrpo train` defaults for the tiny task models; TRL's own suit billion-parameter models on GPUs.

    bf16 and gradient checkpointing follow the device (``PGRPOConfig``); ``use_cpu`` is set on a machine without a
    CUDA GPU, where `torchrun` otherwise gives transformers a process group it does not treat as multi-CPU. The policy
    defaults to the task's tiny one.
    """
    return {
        "use_cpu": not torch.cuda.is_available(),
        "per_device_train_batch_size": 32,
        "num_generations": 4,
        "max_completion_length": 24,
        "learning_rate": 5e-4,
        "max_steps": 60,
        "beta": 0.0,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 20,
        "save_total_limit": 2,
        "seed": 0,
        "output_dir": UNSET_OUTPUT_DIR,
        "model_name_or_path": "tiny",
    }


def choose_group_column(config: PGRPOConfig, task: Task) -> str:
    """The task's group column, or the one given with ``--group_column`` (it must exist in the task's data)."""
    default = PGRPOConfig.__dataclass_fields__["group_column"].default
    column = task.group_column if config.group_column == default else config.group_column
    for name, dataset in (("train", task.train_dataset), ("held-out", task.eval_dataset)):
        if column not in dataset.column_names:
            raise ValueError(
                f"--group_column {column!r}: the {name} data of task {task.name!r} has no such column; its columns "
                f"are {dataset.column_names}. Leave --group_column unset to use the task's ({task.group_column!r})."
            )
    return column


def check_task_data(task: Task, group_column: str) -> None:
    """The task's datasets have a ``prompt`` column and valid labels in ``group_column``: checked before any model is
    built, so that a mistake in the data is reported in seconds (the trainer checks again, for Python users)."""
    for name, dataset in (("train", task.train_dataset), ("held-out", task.eval_dataset)):
        if "prompt" not in dataset.column_names:
            raise ValueError(
                f"The {name} data of task {task.name!r} has no 'prompt' column; its columns are "
                f"{dataset.column_names}. A task's rows need the prompt text in a 'prompt' column."
            )
        check_group_column(dataset, group_column, f"task {task.name!r} {name} data")


def check_flags(config: PGRPOConfig) -> None:
    """Refuse trainer flags that `pgrpo train` would otherwise override without saying so."""
    if config.output_dir != UNSET_OUTPUT_DIR:
        raise ValueError(
            f"pgrpo train keeps a run in one directory and its checkpoints in <run_dir>/checkpoints; pass "
            f"--run_dir {config.output_dir} instead of --output_dir."
        )


def model_init_kwargs(model_args: ModelConfig, config: PGRPOConfig) -> dict[str, Any]:
    """``from_pretrained`` keywords of the policy: ModelConfig's revision, dtype and attention, then the config's."""
    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if config.trust_remote_code:
        kwargs["trust_remote_code"] = True
    return {**kwargs, **(config.model_init_kwargs or {})}


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for the ``with`` block only."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def as_chat(dataset: Dataset) -> Dataset:
    """Prompts as one user message each (for models with a chat template, as their instruct training was)."""
    return dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})


def only_group(task: Task, group_column: str, group: str) -> Task:
    """``task`` trained on the prompts of one group alone (a specialist's data); the held-out set is kept whole and
    evaluation picks the group's rows (``evaluate_policy(only_group=...)``)."""
    keep = [i for i, label in enumerate(task.train_dataset[group_column]) if str(label) == group]
    if not keep:
        groups = sorted({str(label) for label in task.train_dataset[group_column]})
        raise ValueError(
            f"--train_group {group!r} has no train prompts in task {task.name!r}; its groups are {groups}."
        )
    return dataclasses.replace(task, train_dataset=task.train_dataset.select(keep))


def policy_task(task: Task, group_labels: str, group_column: str, conditioning: GroupConditioning) -> Task:
    """The task text a tiny policy is built and warm-started from: ``task`` itself, or with prompt conditioning every
    prompt conditioned, the train and held-out ones on the task's groups (the vocabulary: every group's text) and the
    warm-start ones that have groups on ``group_labels`` (whose warm-start labels do not depend on the training
    seed), so that one warm start serves every seed of a run's settings."""
    if (prompt := conditioning.prompt) is None:
        return task
    labelled, label_column = with_labels(task, group_labels, group_column, seed=0)
    sft = labelled.sft_dataset
    return dataclasses.replace(
        task,
        train_dataset=condition_prompts(task.train_dataset, prompt, group_column),
        eval_dataset=condition_prompts(task.eval_dataset, prompt, group_column),
        sft_dataset=condition_prompts(sft, prompt, label_column)
        if sft is not None and label_column in sft.column_names
        else sft,
    )


def run_name(run: RunArguments, config: PGRPOConfig) -> str:
    """Default run directory name: ``<task>-<estimator>[-<labels>][-<conditioning>][-only-<group>]-s<seed>``."""
    parts = [task_directory_name(run.task), config.estimator]
    parts += [run.group_labels] if run.group_labels != "task" else []
    parts += [config.group_conditioning.replace("+", "_")] if config.group_conditioning != "none" else []
    parts += [f"only-{run.train_group}"] if run.train_group else []
    return "-".join([*parts, f"s{config.seed}"])


@dataclass
class Prepared:
    """What a run trains with, once its task, labels, conditioning and directory are settled."""

    task: Task
    run_dir: Path
    model_path: str
    group_column: str  # the task's groups: rewards and held-out results
    resuming: bool
    changed: list[str]  # resuming: the settings changed since the run began ("key: old -> new")


def prepare(run: RunArguments, config: PGRPOConfig, model_args: ModelConfig, task: Task | None) -> Prepared:
    """Build the task, choose its labels and conditioning, prepare the run directory and the policy."""
    check_flags(config)
    task = task or build_task(run.task, seed=run.task_seed, **run.options())
    group_column = choose_group_column(config, task)
    check_task_data(task, group_column)
    trained = only_group(task, group_column, run.train_group) if run.train_group else task
    config.model_init_kwargs = model_init_kwargs(model_args, config)
    if config.group_descriptions is None and task.group_descriptions:
        config.group_descriptions = dict(task.group_descriptions)  # the task's own, unless given
    elif config.group_descriptions:  # given: each must describe one of the task's groups (a typo would be ignored)
        labels = list(task.train_dataset[group_column]) + list(task.eval_dataset[group_column])
        check_descriptions(config.group_descriptions, labels, f"task {task.name!r} (--group_column {group_column})")
    run_dir = Path(run.run_dir or Path("runs") / run_name(run, config))
    config.output_dir = str(run_dir / "checkpoints")
    state = PartialState()  # under torchrun / accelerate launch the main process prepares, then the others read
    with state.main_process_first():  # the run directory, discovered labels and the tiny policy
        if state.is_main_process:
            sections = {"run": run, "trainer": config, "model": model_args}
            changed = prepare_run_dir(run_dir, resolve(sections), run.overwrite)
            resuming, changed = changed is not None, changed or []
        else:
            resuming, changed = not run.overwrite and (run_dir / "checkpoints").exists(), []
        # the policy is built from the whole task, so that a specialist starts from exactly the shared runs' policy
        built = policy_task(task, run.group_labels, group_column, config.conditioning())
        model_path = policy_path(built, model_args.model_name_or_path)
        task, config.group_column = with_labels(trained, run.group_labels, group_column, config.seed)
    return Prepared(task, run_dir, model_path, group_column, resuming, changed)


def make_trainer(run: Prepared, config: PGRPOConfig, model_args: ModelConfig) -> tuple[PGRPOTrainer, bool]:
    """The P-GRPO trainer of a prepared run (chat prompts for models with a chat template), and whether it chats."""
    tokenizer = AutoTokenizer.from_pretrained(run.model_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = tokenizer.chat_template is not None  # instruct models get the task prompt as a user message
    train_dataset = run.task.train_dataset
    eval_dataset = run.task.eval_dataset if config.eval_strategy != "no" else None  # in-training evaluation
    if chat:
        train_dataset = as_chat(train_dataset)
        eval_dataset = eval_dataset and as_chat(eval_dataset)
    tensorboard = os.environ.get("TENSORBOARD_LOGGING_DIR", str(run.run_dir / "tensorboard"))
    with environment(TENSORBOARD_LOGGING_DIR=tensorboard):  # --report_to tensorboard writes into the run directory
        trainer = PGRPOTrainer(
            model=run.model_path,
            reward_funcs=run.task.reward_fn,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[MetricsLog(run.run_dir / "metrics.jsonl"), CurrentSchedule()],
            peft_config=get_peft_config(model_args),
            quantization_config=get_quantization_config(model_args),
        )
    short_step_logs(trainer)
    return trainer, chat


def sampling_options(config: PGRPOConfig) -> dict[str, Any]:
    """The ``generate`` options TRL samples completions with in training (GRPOConfig: temperature, top_p, top_k with
    0 for none, min_p, repetition_penalty), for held-out samples from the same sampler."""
    options = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k or 0}
    options["repetition_penalty"] = config.repetition_penalty
    if config.min_p is not None:
        options["min_p"] = config.min_p
    return options


def evaluate(trainer: PGRPOTrainer, run: Prepared, arguments: RunArguments, config: PGRPOConfig, chat: bool) -> dict:
    """Held-out evaluation of the trained policy against the policy it started from (written to eval.json)."""
    # no step or learning rate 0 (a frozen reference): the policy is the initial policy, no copy to load and no KL
    # to estimate; a quantized policy is not the initial (unquantized) one
    reference = trainer.model
    updated = config.learning_rate != 0 and trainer.state.global_step > 0
    if updated or getattr(trainer.model.config, "quantization_config", None) is not None:
        reference = AutoModelForCausalLM.from_pretrained(run.model_path, **config.model_init_kwargs)
    evaluation = evaluate_policy(
        trainer.model,
        trainer.processing_class,
        run.task,
        reference,
        arguments.eval_prompts,
        arguments.eval_samples,
        config.max_completion_length,
        config.seed,
        chat,
        run.group_column,
        conditioning=config.conditioning(),
        label_column=config.group_column,
        only_group=arguments.train_group or None,
        greedy=arguments.eval_greedy,
        sampling=sampling_options(config),
        reference_cache=INITIAL_PERPLEXITY.setdefault(run.model_path, {}),
        kl_samples=arguments.eval_kl_samples,
        prompt_perplexity=arguments.eval_prompt_perplexity,
    )
    (run.run_dir / "eval.json").write_text(json.dumps(evaluation, indent=2))
    return evaluation


def resume_message(run: Prepared, checkpoint: str | None) -> str:
    """What a resumed run says first: where it resumes from and which settings changed."""
    where = f"from {Path(checkpoint).name}" if checkpoint else "with no checkpoint saved yet: from step 0"
    changed = f" (changed: {'; '.join(run.changed)})" if run.changed else ""
    return f"pgrpo train: resuming {run.run_dir} {where}{changed}"


def final_reward(metrics: list[dict[str, Any]], last: int = 5) -> float:
    """Mean logged train reward of the ``last`` steps, over the steps that have one (TRL logs NaN as None)."""
    values = [m.get("reward") for m in metrics[-last:]]
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def train(
    run: RunArguments, config: PGRPOConfig, model_args: ModelConfig | None = None, task: Task | None = None
) -> dict[str, Any]:
    """Train one policy with ``config`` on ``run.task`` and evaluate it; returns the summary."""
    model_args = model_args or ModelConfig(model_name_or_path="tiny")
    prepared = prepare(run, config, model_args, task)
    trainer, chat = make_trainer(prepared, config, model_args)
    checkpoint = config.resume_from_checkpoint
    if checkpoint is None and prepared.resuming and Path(config.output_dir).exists():
        checkpoint = get_last_checkpoint(config.output_dir)
    if prepared.resuming and trainer.accelerator.is_main_process:
        print(resume_message(prepared, checkpoint), flush=True)
        if checkpoint:  # the steps after the checkpoint are trained again
            mark_resume(prepared.run_dir / "metrics.jsonl", int(Path(checkpoint).name.rsplit("-", 1)[-1]))
    start = time.perf_counter()
    if config.max_steps != 0:  # --max_steps 0: no training, the initial policy is evaluated (an untrained reference)
        trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.save_model(str(prepared.run_dir / "final"))  # on every process: ZeRO-3 / FSDP gather the weights

    evaluation: dict[str, Any] = {}
    if run.eval_prompts > 0 and trainer.accelerator.is_main_process:
        evaluation = evaluate(trainer, prepared, run, config, chat)
    eval_seconds = time.perf_counter() - start
    metrics = read_metrics(prepared.run_dir / "metrics.jsonl")
    summary = {
        "task": run.task,
        "estimator": config.estimator,
        "history": config.history,
        "group_labels": run.group_labels,
        "group_conditioning": config.group_conditioning,
        "train_group": run.train_group or None,
        "seed": config.seed,
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / trainer.state.global_step if trainer.state.global_step else None,
        "eval_seconds": eval_seconds,  # with saving the final model
        "final_train_reward": final_reward(metrics),
        "nonfinite_train_rewards": {str(k): v for k, v in sorted(trainer.nonfinite_rewards.items(), key=str)},
        "group_history": {str(k): v for k, v in trainer.advantage_engine.tracker.summary().items()},
        "eval": {k: v for k, v in evaluation.items() if k != "examples"},
        "resumed": prepared.resuming,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
    }
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        (prepared.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if accelerator.num_processes > 1:
        del trainer  # the DDP wrapper holds the process group: free it first, else gloo threads may abort the exit
        gc.collect()
        accelerator.end_training()  # destroys the process group
    return summary


def train_command(run: RunArguments, config: PGRPOConfig, model_args: ModelConfig) -> int:
    summary = train(run, config, model_args)
    if PartialState().is_main_process:
        print(run_report(summary, Path(config.output_dir).parent))
    return 0


TRAIN = Command(arguments=(RunArguments, PGRPOConfig, ModelConfig), run=train_command, defaults=cpu_friendly_defaults)
