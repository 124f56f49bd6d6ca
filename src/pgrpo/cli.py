"""The ``pgrpo`` command line.

    pgrpo train --task personas --estimator pgrpo --max_steps 60          # one run
    pgrpo train --config my_run.yaml --learning_rate 5e-4                   # YAML + flags, as TRL's scripts
    pgrpo train --task clothing_task.py:build --task_options '{"num_reviews": 500}'  # docs/own_task.md
    pgrpo tasks [--task SPEC]                                               # tasks, their options and defaults
    pgrpo demo                                                              # GRPO vs P-GRPO, 1-4 min on 2 CPU cores
    pgrpo bench --config configs/bench.yaml                                 # the experiment matrix
    pgrpo report runs/bench                                                 # tables + figures of a bench
    pgrpo judge runs/a runs/b [--judge llm --llm_url URL --llm_model NAME]  # per-group win rate of A over B
    pgrpo groups fit --data users.jsonl --features bio --model_dir g --output users.g.jsonl   # discover groups
    pgrpo <command> --help                                                  # every option, explained

Every command parses its options the same way, with TRL's ``TrlParser``: each option is a flag and a
key of the YAML file given by ``--config`` (flags win). ``train`` accepts every ``PGRPOConfig``
(= TRL ``GRPOConfig`` + P-GRPO) field; its embedded defaults suit a tiny model on a CPU. It works
under ``accelerate launch`` and ``torchrun``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pgrpo.command import Command, run_command

# name -> ("module:attribute" of its Command, one-line help); a module is imported only when its command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pgrpo.experiments.train:TRAIN", "train one policy on a task and evaluate it (one run directory)"),
    "tasks": ("pgrpo.tasks.registry:LIST", "the tasks (built-in and installed) with their options and defaults"),
    "demo": (
        "pgrpo.experiments.bench.commands:DEMO",
        "GRPO vs P-GRPO on personas with the tiny policy, 1-4 minutes on 2 CPU cores",
    ),
    "bench": (
        "pgrpo.experiments.bench.commands:BENCH",
        "the experiment matrix: tasks x variants x seeds, then the report",
    ),
    "report": ("pgrpo.experiments.bench.commands:REPORT", "tables, figures and results.json of a bench directory"),
    "generate": ("pgrpo.experiments.generate:GENERATE", "a finished run's answers for a user of a given group"),
    "judge": ("pgrpo.experiments.judge.command:JUDGE", "per-group win rate of one run's policy over another's"),
    "groups": (
        "pgrpo.groups.command:GROUPS",
        "preference groups from user features: fit k-means, label new users (assign)",
    ),
}


def load_command(name: str) -> Command:
    module, attribute = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), attribute)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pgrpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} (pgrpo --help)")
    return run_command(argv[0], load_command(argv[0]), argv[1:])


# What a user's mistake raises (bad data, flags, task specs, run directories): shown as one line, no traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError)


def console(argv: Sequence[str] | None = None) -> int:
    """The ``pgrpo`` executable: :func:`main`, with a user's mistake printed as ``pgrpo <command>: error: <message>``
    on stderr and exit code 2 instead of a traceback (``PGRPO_TRACEBACK=1`` keeps the traceback, for debugging)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except USER_ERRORS as error:
        if os.environ.get("PGRPO_TRACEBACK", "0") not in ("", "0"):
            raise
        command = f"pgrpo {argv[0]}" if argv and argv[0] in COMMANDS else "pgrpo"
        print(f"{command}: error: {error} (PGRPO_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console())
