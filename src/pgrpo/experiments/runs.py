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
resumes from its last checkpoint, provided its config is the same but for how long it trains and what it logs,
saves and evaluates (:data:`RESUMABLE`). ``pgrpo.experiments.train``
runs the training itself.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

VOLATILE = ("output_dir", "resume_from_checkpoint")
# Settings that change no result of a run: what it logs and saves, and how.
RECORD_KEEPING_PREFIXES = ("trainer.logging_", "trainer.save_")
RECORD_KEEPING = {
    "trainer.report_to",
    "trainer.disable_tqdm",
    "trainer.log_level",
    "trainer.log_completions",
    "trainer.num_completions_to_print",
    "trainer.per_device_eval_batch_size",
    "trainer.run_name",
}
# Settings an unfinished run may change when it resumes: how long it trains and how it is evaluated (none of which
# changes the steps already taken), and the record keeping. Every other setting must stay as it was.
RESUMABLE_PREFIXES = ("trainer.eval_", *RECORD_KEEPING_PREFIXES)
RESUMABLE = {"trainer.max_steps", "trainer.num_train_epochs", "run.eval_prompts", "run.eval_samples", *RECORD_KEEPING}


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


class CurrentSchedule(TrainerCallback):
    """A resumed run logs, evaluates and saves every as many steps as it is asked now: transformers takes those
    from the checkpoint's trainer state when it resumes (pgrpo train lets them change: ``RESUMABLE``)."""

    def on_step_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)


RESUMED = "resumed_from_step"  # a metrics.jsonl line: the steps after it were trained again from a checkpoint


def mark_resume(path: Path, step: int) -> None:
    """Append to the JSON-lines log ``path`` that the run resumes from the checkpoint of ``step``: what was logged for
    later steps belongs to the interrupted attempt (the log stays append-only; :func:`read_metrics` drops it)."""
    with path.open("a") as f:
        f.write(json.dumps({RESUMED: step}) + "\n")


def task_build(config: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
    """(task, task options, task seed) of a run's loaded config.yaml: what fixes its prompts and held-out set."""
    run = config["run"]
    options = run["task_options"]
    return run["task"], json.loads(options) if isinstance(options, str) else dict(options), int(run["task_seed"])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Training log lines of a run, one per step: after a resume, what the interrupted attempt logged for the steps
    trained again is dropped (:func:`mark_resume`) and the last written wins."""
    by_step: dict[int, dict[str, Any]] = {}
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        entry = json.loads(line)
        if RESUMED in entry:
            by_step = {step: kept for step, kept in by_step.items() if step <= entry[RESUMED]}
        elif "loss" in entry:
            by_step[entry["step"]] = entry
    return [by_step[step] for step in sorted(by_step)]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def may_change_on_resume(key: str) -> bool:
    """Whether the setting ``key`` ("section.field") may differ when an unfinished run resumes."""
    return key in RESUMABLE or key.startswith(RESUMABLE_PREFIXES)


def changes_results(key: str) -> bool:
    """Whether the setting ``key`` ("section.field") changes a finished run's results (all but record keeping)."""
    return key not in RECORD_KEEPING and not key.startswith(RECORD_KEEPING_PREFIXES)


def prepare_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool) -> list[str] | None:
    """Create ``run_dir`` (returns None) or check that it can be resumed: returns the settings changed since it was
    written, as ``"key: old -> new"`` (only :func:`may_change_on_resume` ones; config.yaml then records the new)."""
    config_path = run_dir / "config.yaml"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    elif (run_dir / "summary.json").exists():
        raise FileExistsError(
            f"Run directory {run_dir} holds a finished run; pass --overwrite to replace it or choose another --run_dir."
        )
    elif config_path.exists():
        old, new = flatten(yaml.safe_load(config_path.read_text())), flatten(resolved)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if refused := [k for k in changed if not may_change_on_resume(k)]:
            raise ValueError(
                f"Run directory {run_dir} holds an unfinished run with another config (differs in {refused}); "
                "resume with the same arguments (only how long it trains and what it logs, saves and evaluates may "
                "change), pass --overwrite, or choose another --run_dir."
            )
        config_path.write_text(yaml.safe_dump(resolved, sort_keys=True))
        return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} exists and is not a pgrpo run directory; choose another --run_dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(resolved, sort_keys=True))
    return None


def resolve(sections: dict[str, Any]) -> dict[str, Any]:
    """Everything that defines a run, as plain YAML-able values: ``{section: {field: value}}``.

    ``sections`` maps a name to a dataclass of options (a ``TrainingArguments`` is read through ``to_dict``);
    the trainer's ``output_dir`` (it follows from the run directory) and
    ``resume_from_checkpoint`` (where to resume from, not what the run is) are left out.
    """
    resolved = {}
    for name, options in sections.items():
        values = options.to_dict() if hasattr(options, "to_dict") else asdict(options)
        values = {k: v for k, v in values.items() if not k.startswith("_") and k not in VOLATILE}
        resolved[name] = json.loads(json.dumps(values, default=str))
    return resolved
