"""What the commands print: aligned plain-text tables (`pgrpo train`'s held-out results, `pgrpo demo`'s variants)
and one short line per logged training step in place of TRL's dict of every metric (metrics.jsonl keeps them all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerControl, TrainerState, TrainingArguments

from pgrpo.core.curves import WORST_RUNNING


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: a float with ``digits`` decimals, "–" for a missing or non-finite number, else ``str``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def text_table(rows: Mapping[str, Mapping[str, Any]], index: str, digits: int = 3) -> str:
    """``{row name: {column: value}}`` as an aligned table under a header: ``index`` names the first column, the
    others are every row's columns in order of appearance (a cell a row lacks is "–"); text left, numbers right."""
    columns = list(dict.fromkeys(column for row in rows.values() for column in row))
    cells = [[name, *(cell(row.get(column), digits) for column in columns)] for name, row in rows.items()]
    header = [index, *columns]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            text.ljust(width) if i == 0 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [header, *cells]
    )


def held_out_table(evaluation: Mapping[str, Any]) -> str:
    """The held-out reward of each group and of all (sampled, and greedy when evaluated), with the prompts per group
    and, where some rewards were not finite, how many; the worst group marked."""
    worst = evaluation["worst_group_sampled"]
    rows: dict[str, dict[str, Any]] = {}
    for group, prompts in evaluation["per_group_prompts"].items():
        sampled = evaluation["per_group_sampled"].get(group, math.nan)
        rows[group] = {"prompts": prompts, "sampled": sampled}
        if "per_group_greedy" in evaluation:
            rows[group]["greedy"] = evaluation["per_group_greedy"].get(group, math.nan)
        if any(evaluation.get("per_group_nonfinite_sampled", {}).values()):
            rows[group]["not finite"] = evaluation["per_group_nonfinite_sampled"].get(group, 0)
        rows[group][""] = "<- worst" if sampled == worst else ""
    rows["all groups"] = {"prompts": evaluation["num_prompts"], "sampled": evaluation["reward_sampled"], "": ""}
    if "reward_greedy" in evaluation:
        rows["all groups"]["greedy"] = evaluation["reward_greedy"]
    return text_table(rows, "group")


def run_report(summary: Mapping[str, Any], run_dir: Path) -> str:
    """What `pgrpo train` prints when it is done: steps and time, the held-out table (``held_out_table``), the worst
    group and the KL to the initial policy, and where the run directory is."""
    lines = [f"pgrpo train: finished {summary['steps']} steps in {summary['train_seconds']:.0f} s"]
    evaluation = summary["eval"]
    if evaluation:
        samples = evaluation["samples_per_prompt"]
        lines += ["", f"Held-out reward ({evaluation['num_prompts']} prompts, {samples} sampled completions each):"]
        lines += [held_out_table(evaluation), ""]
        per_group = {g: v for g, v in evaluation["per_group_sampled"].items() if math.isfinite(v)}
        worst = min(per_group, key=per_group.__getitem__, default="none with a finite reward")
        lines += [f"worst group: {worst}, {cell(evaluation['worst_group_sampled'])} (sampled)"]
        if "kl_to_initial" in evaluation:
            lines += [f"KL to the initial policy: {cell(evaluation['kl_to_initial'], 4)} per token"]
    else:
        lines += ["no held-out evaluation (--eval_prompts 0)"]
    lines += [f"run directory: {run_dir} (summary.json, eval.json, metrics.jsonl, final/)"]
    return "\n".join(lines)


def step_line(state: TrainerState, logs: Mapping[str, Any]) -> str:
    """One logged training step: its reward, worst group's running reward, loss, and KL when TRL logs it."""
    parts = [f"step {state.global_step}/{state.max_steps}", f"reward {cell(logs.get('reward'))}"]
    parts += [f"worst group {cell(logs.get(WORST_RUNNING))}", f"loss {cell(logs.get('loss'), 4)}"]
    parts += [f"kl {cell(logs['kl'], 4)}"] if "kl" in logs else []
    return "  ".join(parts)


END_OF_TRAINING = "train_runtime"  # in the logs ``Trainer.train`` ends with; ``run_report`` says it in its first line


class StepLines:
    """Mixin for a transformers log callback: a training step's logs (those with a reward) become one ``step_line``,
    written by ``write_step``; the end-of-training summary is left out (``run_report`` gives steps and time); any
    other logs go to the callback's own ``on_log``."""

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is not None and "reward" in logs:
            self.write_step(state, step_line(state, logs))
        elif logs is None or END_OF_TRAINING not in logs:
            super().on_log(args, state, control, logs=logs, **kwargs)

    def write_step(self, state: TrainerState, line: str) -> None:
        raise NotImplementedError


class ProgressLines(StepLines, ProgressCallback):
    """transformers' progress bar, with a training step's logs as one ``step_line`` (other logs as before)."""

    def write_step(self, state: TrainerState, line: str) -> None:
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(line)


class PrinterLines(StepLines, PrinterCallback):
    """transformers' printer (``--disable_tqdm true``), with a training step's logs as one ``step_line``."""

    def write_step(self, state: TrainerState, line: str) -> None:
        if state.is_local_process_zero:
            print(line, flush=True)


def short_step_logs(trainer: Trainer) -> None:
    """Swap the trainer's log printer (the progress bar, or the printer with ``disable_tqdm``) for its short form."""
    for default, short in ((ProgressCallback, ProgressLines), (PrinterCallback, PrinterLines)):
        if trainer.pop_callback(default) is not None:
            trainer.add_callback(short)
