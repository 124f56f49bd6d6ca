"""``pgrpo generate``: a finished run's policy answering a user of a given group, conditioned as in training.

    pgrpo generate --run_dir runs/personas-grpo-prompt-s0 --group kemar --prompt "Any music for a party?"

From Python: ``generate_for_group(run_dir, "kemar", ["Any music for a party?"])``, or the policy itself with
``pgrpo.models.serving.serve(run_dir, "kemar")``. The prompt goes through the run's own conditioning
(``group_conditioning`` in its config.yaml, decoded by the serving module): with ``prompt``, the group's text as in
training (a system message for chat models); with ``adapter``, the group's adapter on the shared weights. A group
the run never trained on gets the shared policy (adapter) or its own text, which the policy never saw (prompt),
with a notice. Without ``--prompt``, the group's held-out prompts of the run's task are answered.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgrpo.command import Command
from pgrpo.experiments.runs import task_build
from pgrpo.models.serving import read_run_config, serve

logger = logging.getLogger(__name__)


@dataclass
class GenerateArguments:
    """Which run, which user, which prompts."""

    run_dir: str = field(default="", metadata={"help": "A finished `pgrpo train` run directory (with final/)."})
    group: str = field(default="", metadata={"help": "The user's preference group, a label the run trained with."})
    prompt: list[str] = field(
        default_factory=list, metadata={"help": "Prompts to answer (default: the group's held-out prompts)."}
    )
    num_prompts: int = field(default=4, metadata={"help": "Held-out prompts to answer when no --prompt is given."})
    max_new_tokens: int = field(default=0, metadata={"help": "Tokens per answer (0: the run's completion length)."})
    greedy: bool = field(default=False, metadata={"help": "Greedy decoding instead of sampling."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def trained_groups(run_dir: Path) -> list[str]:
    """The group labels the run's trainer saw (summary.json), as strings; empty if unknown."""
    summary = run_dir / "summary.json"
    return list(json.loads(summary.read_text()).get("group_history", {})) if summary.is_file() else []


def held_out_prompts(config: dict[str, Any], group: str, limit: int) -> list[str]:
    """Up to ``limit`` held-out prompts of ``group`` (the task's groups) of the run's task."""
    from pgrpo.tasks import build_task

    name, options, seed = task_build(config)
    task = build_task(name, seed=seed, **options)
    prompts = [row["prompt"] for row in task.eval_dataset if str(row[task.group_column]) == group][:limit]
    if not prompts:
        groups = sorted({str(label) for label in task.eval_dataset[task.group_column]})
        raise ValueError(f"Task {name!r} has no held-out prompts of group {group!r}; its groups are {groups}.")
    return prompts


def generate_for_group(
    run_dir: str | Path,
    group: Any,
    prompts: list[str],
    max_new_tokens: int | None = None,
    do_sample: bool = True,
    seed: int = 0,
) -> list[str]:
    """Answers of the run's final policy to ``prompts`` from a user of ``group``, conditioned as in training."""
    run_dir, group = Path(run_dir), str(group)
    config = read_run_config(run_dir)
    served = serve(run_dir, group)
    if (known := trained_groups(run_dir)) and group not in known:
        logger.warning("Group %r was not trained on (the run's groups: %s); answering with the shared policy's "
                       "behaviour for an unseen group.", group, ", ".join(known))  # fmt: skip
    if served.conditioning.kind == "none":
        logger.warning("Run %s was trained without group conditioning (group_conditioning=none): its policy answers "
                       "every group alike, so the group changes nothing but which held-out prompts are asked.",
                       run_dir)  # fmt: skip
    tokens = max_new_tokens or config["trainer"].get("max_completion_length") or 64
    return served.answer(prompts, max_new_tokens=tokens, do_sample=do_sample, seed=seed)


def generate_command(args: GenerateArguments) -> int:
    if not args.run_dir or not args.group:
        raise ValueError("pgrpo generate needs --run_dir RUN and --group GROUP (a label the run trained with).")
    run_dir = Path(args.run_dir)
    prompts = args.prompt or held_out_prompts(read_run_config(run_dir), args.group, args.num_prompts)
    answers = generate_for_group(run_dir, args.group, prompts, args.max_new_tokens or None, not args.greedy, args.seed)
    for prompt, answer in zip(prompts, answers, strict=True):
        print(f"[{args.group}] {prompt}\n  -> {answer.strip()}\n")
    return 0


GENERATE = Command(arguments=(GenerateArguments,), run=generate_command)
