"""A toy P-GRPO run for the reliability tests: one process, ``torchrun`` or DeepSpeed, deterministic on CPU.

    python -m tests.reliability.toy_train --model-dir M --output-dir O [--save-steps 1] [--resume last|PATH]
    torchrun --standalone --nproc_per_node 2 -m tests.reliability.toy_train --model-dir M --output-dir O --dump-dir D
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 2 --mixed_precision no \
        -m tests.reliability.toy_train --model-dir M --output-dir O --dump-dir D

Every rank writes, per generation batch, ``D/rank{r}/batch{k}.json`` (its engine state after the batch, the gathered
rewards and labels, the global and local advantages, the sum of its model parameters). At the end rank 0 writes
``O/final/`` (the model) and ``O/final/pgrpo_group_stats.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pgrpo.testing import toy_dataset, toy_reward
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.trainer import STATS_FILE, save_group_stats


class DumpingTrainer(PGRPOTrainer):
    """Writes what every generation batch did to ``dump_dir`` (see the module docstring)."""

    dump_dir: Path | None = None

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.dump_dir is not None and self.model.training:
            rewards = self._gathered_rewards
            record = {
                "global_step": self.state.global_step,
                "process_index": self.accelerator.process_index,
                "num_processes": self.accelerator.num_processes,
                "distributed_type": str(self.accelerator.distributed_type),
                "zero_stage": self.accelerator.state.deepspeed_plugin.zero_stage if self.is_deepspeed_enabled else None,
                "rewards_per_func": rewards.tolist(),
                "reward_weights": self.reward_weights.tolist(),
                "groups": list(self._gathered_groups),
                "advantages": list(self._logs["advantages"])[-len(rewards) :],
                "local_advantages": output["advantages"].tolist(),
                "state": self.advantage_engine.state_dict(),
                "parameter_sum": sum(p.detach().double().sum().item() for p in self.model.parameters()),
            }
            folder = self.dump_dir / f"rank{self.accelerator.process_index}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"batch{self.state.global_step:04d}.json").write_text(json.dumps(record))
        return output


class SlowDown(TrainerCallback):
    """Sleeps after every optimizer step, so that a test can kill the run between two checkpoints."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        time.sleep(self.seconds)


def prepare_deepspeed_on_cpu() -> None:
    """Two CPU-only adjustments for DeepSpeed runs (neither matters on GPUs).

    1. DeepSpeed JIT-compiles a shared-memory all-reduce (``deepspeed_shm_comm``) with ninja on first use (~80 s on
       2 cores, cached afterwards in ``~/.cache/torch_extensions``). Marking it incompatible in DeepSpeed's probe
       table (one module-level dict, so the edit persists) makes collectives go through torch.distributed (gloo).
    2. transformers' CPU setup starts torch.distributed but not ``deepspeed.comm``, so ZeRO-3's ``zero.Init`` (run
       while the model loads, before the Accelerator exists) would see a world size of 1; initialize it here.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--save-steps", type=int, default=0, help="0: no checkpoints")
    parser.add_argument("--resume", default=None, help="'last' or a checkpoint directory")
    parser.add_argument("--dump-dir", default=None)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--num-rows", type=int, default=32)
    parser.add_argument("--deepspeed", default=None, help="DeepSpeed JSON config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=1.0, help="group_sampling_alpha")
    parser.add_argument("--weighting", default="none", help="group_weighting")
    parser.add_argument("--conditioning", default="none", help="group_conditioning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # deterministic and modest on a shared CPU
    if args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":  # --deepspeed or an accelerate config
        prepare_deepspeed_on_cpu()
    config = PGRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_batch,
        num_generations=4,
        max_completion_length=6,
        learning_rate=1e-2,
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        deepspeed=args.deepspeed,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        group_sampling_alpha=args.alpha,
        group_weighting=args.weighting,
        group_weight_step=0.5,
        group_conditioning=args.conditioning,
    )
    trainer = DumpingTrainer(
        model=args.model_dir,
        reward_funcs=toy_reward,
        args=config,
        train_dataset=toy_dataset(args.num_rows, small_every=3),
        callbacks=[SlowDown(args.step_sleep)] if args.step_sleep else None,
    )
    trainer.dump_dir = Path(args.dump_dir) if args.dump_dir else None
    resume = True if args.resume == "last" else args.resume
    trainer.train(resume_from_checkpoint=resume)
    final = Path(args.output_dir) / "final"
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        save_group_stats(trainer.advantage_engine, final / STATS_FILE, config.group_sampling_alpha)
    accelerator = trainer.accelerator
    del trainer  # the DDP wrapper holds the process group: free it first, else gloo threads may abort the exit
    gc.collect()
    accelerator.end_training()  # destroys the process group


if __name__ == "__main__":
    main()
