"""The ``pgrpo`` command: ``train``, ``demo``, ``bench``, ``report``, ``judge``.

    pgrpo train --task personas --estimator pgrpo --max_steps 60          # one run
    pgrpo train --config my_run.yaml --learning_rate 5e-4                   # YAML + flags, as TRL's scripts
    pgrpo demo                                                              # GRPO vs P-GRPO, < 5 min on CPU
    pgrpo bench --config configs/bench.yaml                                 # the experiment matrix
    pgrpo report runs/bench                                                 # tables + figures of a bench
    pgrpo judge runs/a runs/b [--judge llm --llm_url URL --llm_model NAME]  # per-group win rate of A over B
    pgrpo <command> --help                                                  # every option, explained

``train`` accepts every ``PGRPOConfig`` (= TRL ``GRPOConfig`` + P-GRPO) field as a flag or YAML key;
the embedded defaults suit a tiny model on a CPU and are overridden by ``--config`` and flags.
It works under ``accelerate launch`` and ``torchrun``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

USAGE = __doc__


def cpu_friendly_defaults() -> dict[str, Any]:
    """Trainer defaults for the tiny task models; TRL's own suit billion-parameter models on GPUs."""
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


def parse_train(argv: Sequence[str]) -> tuple[Any, Any]:
    from trl import TrlParser

    from pgrpo.experiments.runs import RunArguments
    from pgrpo.trainer import PGRPOConfig

    parser = TrlParser((RunArguments, PGRPOConfig), prog="pgrpo train")
    parser.set_defaults(**cpu_friendly_defaults())
    run, config = parser.parse_args_and_config(list(argv))
    return run, config


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from pgrpo.experiments.runs import train

        run, config = parse_train(rest)
        summary = train(run, config)
        print(f"finished {summary['steps']} steps; eval: {summary['eval']}")
        return 0
    if command in ("demo", "bench", "report"):
        from pgrpo.experiments import bench

        return getattr(bench, f"{command}_main")(rest)
    if command == "judge":
        from pgrpo.experiments.judge import judge_main

        return judge_main(rest)
    print(f"Unknown command {command!r}.\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
