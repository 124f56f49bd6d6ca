"""Step-time overhead of PGRPOTrainer(estimator="pgrpo") over TRL's GRPOTrainer, interleaved in one process.

    python benchmarks/bench_trainer.py [--rounds 6 --steps 25]

Two model sizes: "micro" (hidden 32, 1 layer: ~25 ms steps, where any fixed cost shows) and
"tiny" (hidden 128, 2 layers, 8 prompts x 4 completions x 16 tokens: the CPU experiment size).
Both trainers get the same model, tokenizer, data and config, with learning rate 0 so that the
policy, and with it every generated completion, stays the same in both: only the overhead differs.
Each round trains a fresh trainer of each kind for ``--steps`` steps, alternating which goes first; a callback records
the wall time of every optimizer step (generation, reward, advantages, loss, backward).
Prints the median step time of each and their ratio (target: <= 1.02).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from pgrpo.testing import build_toy_model_dir, toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.config import CHECKPOINTING_FIELD

CONFIG = {
    "per_device_train_batch_size": 32,
    "num_generations": 4,
    "max_completion_length": 16,
    "use_cpu": True,
    "bf16": False,
    CHECKPOINTING_FIELD: False,
    "report_to": "none",
    "logging_steps": 1,
    "learning_rate": 0.0,  # the policy stays fixed, so both trainers generate the same completions
    "seed": 0,
    "disable_tqdm": True,
    "save_strategy": "no",
}


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def run(kind: str, model_dir: str, output_dir: str, steps: int) -> list[float]:
    timer = StepTimer()
    common = {"output_dir": output_dir, "max_steps": steps, **CONFIG}
    if kind == "grpo_trl":
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=toy_reward,
            args=GRPOConfig(**common),
            train_dataset=toy_dataset(256),
            callbacks=[timer],
        )
    else:
        trainer = PGRPOTrainer(
            model=model_dir,
            reward_funcs=toy_reward,
            args=PGRPOConfig(estimator="pgrpo", **common),
            train_dataset=toy_dataset(256),
            callbacks=[timer],
        )
    trainer.train()
    return timer.times[1:]  # the first step warms up caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    for name, hidden, layers in (("micro", 32, 1), ("tiny", 128, 2)):
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build_toy_model_dir(Path(tmp) / "model", hidden_size=hidden, num_layers=layers)
            times: dict[str, list[float]] = {"grpo_trl": [], "pgrpo": []}
            for round_index in range(args.rounds):
                order = ("grpo_trl", "pgrpo") if round_index % 2 == 0 else ("pgrpo", "grpo_trl")
                for kind in order:
                    times[kind] += run(kind, model_dir, f"{tmp}/{kind}", args.steps)
        base, ours = (statistics.median(times[k]) for k in ("grpo_trl", "pgrpo"))
        print(
            f"[{name}: hidden {hidden}, {layers} layer(s); {len(times['pgrpo'])} steps timed per trainer, "
            f"{args.rounds} interleaved rounds]"
        )
        print(f"  GRPOTrainer (TRL)             median step {base * 1e3:8.2f} ms")
        print(f"  PGRPOTrainer(estimator=pgrpo) median step {ours * 1e3:8.2f} ms")
        print(f"  ratio PGRPO / GRPO: {ours / base:.4f} (target <= 1.02)")


if __name__ == "__main__":
    main()
