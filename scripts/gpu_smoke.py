#!/usr/bin/env python
"""Smoke test for P-GRPO on a GPU: a few steps of a real small model on a two-group task (< 5 minutes).

    python scripts/gpu_smoke.py                          # SmolLM2-135M-Instruct, bf16, vLLM colocate if importable
    python scripts/gpu_smoke.py --model PATH --no-vllm   # any local causal LM, generation with transformers
    python scripts/gpu_smoke.py --cpu --model PATH       # the same checks on CPU in fp32 (slow: few, short steps)

The task has two preference groups with different reward scales: ``terse`` prompts reward short answers (0..1),
``verbose`` prompts reward long ones (0..5). The script prints every step's reward per group and the group
history, and exits 1 on any failure: an exception, a non-finite loss or advantage, group statistics that do not
add up to the rewards seen, or a checkpoint whose statistics do not load back identically.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GROUPS = {"terse": 1.0, "verbose": 5.0}  # group -> reward scale
TOPICS = ["the ocean", "a city at night", "your favourite meal", "a rainy day", "the moon", "a good friend"]
TARGET_WORDS = 24  # a completion of this many words or more counts as fully long


class SmokeFailure(RuntimeError):
    """A check of the smoke test failed."""


def grouped_dataset(conversational: bool, rows: int = 64) -> Any:
    """Alternating ``terse`` / ``verbose`` prompts about a few topics."""
    from datasets import Dataset

    groups = [list(GROUPS)[i % len(GROUPS)] for i in range(rows)]
    texts = [
        f"Describe {TOPICS[i % len(TOPICS)]}" + (" in a few words." if g == "terse" else " in detail.")
        for i, g in enumerate(groups)
    ]
    prompts = [[{"role": "user", "content": t}] for t in texts] if conversational else texts
    return Dataset.from_dict({"prompt": prompts, "group": groups})


def length_reward(completions: list[Any], group: list[str], **_: Any) -> list[float]:
    """terse: 1 - share of TARGET_WORDS used; verbose: 5 x that share."""
    rewards = []
    for completion, label in zip(completions, group, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        share = min(len(text.split()), TARGET_WORDS) / TARGET_WORDS
        rewards.append(GROUPS[label] * (share if label == "verbose" else 1.0 - share))
    return rewards


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="'smollm2' (pgrpo.models) or a local model directory")
    parser.add_argument("--cpu", action="store_true", help="run on CPU in fp32 (slow; for checking the script)")
    parser.add_argument("--no-vllm", action="store_true", help="generate with transformers even if vLLM imports")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 8 on GPU, 2 on CPU)")
    parser.add_argument("--prompts-per-step", type=int, default=None, help="default 16 on GPU, 4 on CPU")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=None, help="default 48 on GPU, 8 on CPU")
    parser.add_argument("--output-dir", default=None, help="default: a temporary directory")
    return parser.parse_args(argv)


def resolve_model(name: str) -> str:
    if name != "smollm2":
        return name
    from pgrpo.models import policy_path

    return policy_path(None, "smollm2")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="pgrpo-smoke-") as scratch:
            run(args, Path(args.output_dir or scratch))
    except Exception as error:  # report every failure the same way, with its traceback
        traceback.print_exc()
        print(f"P-GRPO SMOKE FAILED: {type(error).__name__}: {error}", flush=True)
        return 1
    return 0


def run(args: argparse.Namespace, output_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from pgrpo.core import AdvantageEngine
    from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
    from pgrpo.trainer.config import CHECKPOINTING_FIELD
    from pgrpo.trainer.trainer import STATS_FILE, load_group_stats

    if not args.cpu and not torch.cuda.is_available():
        raise SmokeFailure("no CUDA device is visible; pass --cpu to run the smoke test on CPU")
    steps = args.steps or (2 if args.cpu else 8)
    prompts_per_step = args.prompts_per_step or (4 if args.cpu else 16)
    max_completion_length = args.max_completion_length or (8 if args.cpu else 48)
    use_vllm = not args.cpu and not args.no_vllm and importlib.util.find_spec("vllm") is not None
    if use_vllm:  # colocate mode initializes torch.distributed even for one process
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", "29517")

    model = resolve_model(args.model)
    conversational = AutoTokenizer.from_pretrained(model).chat_template is not None
    device = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    print(f"model {model} | device {device} | vLLM {'colocate' if use_vllm else 'off'} | steps {steps}", flush=True)

    config = PGRPOConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=max_completion_length,
        learning_rate=5e-6,
        temperature=1.0,
        use_cpu=args.cpu,
        bf16=not args.cpu,
        **{CHECKPOINTING_FIELD: False},
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=512,
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=steps,
        seed=0,
    )

    class CheckingTrainer(PGRPOTrainer):
        """Fails as soon as an advantage handed to the loss is not finite."""

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            if not torch.isfinite(output["advantages"]).all():
                raise SmokeFailure(f"non-finite advantages at step {self.state.global_step}")
            return output

    trainer = CheckingTrainer(
        model=model, reward_funcs=length_reward, args=config, train_dataset=grouped_dataset(conversational)
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    report(trainer.state.log_history)

    tracker = trainer.advantage_engine.tracker
    expected = steps * prompts_per_step * args.num_generations
    counted = int(tracker.count[: tracker.num_groups].sum().item())
    if sorted(tracker.labels) != sorted(GROUPS):
        raise SmokeFailure(f"expected history for groups {sorted(GROUPS)}, got {tracker.labels}")
    if counted != expected:
        raise SmokeFailure(f"the group histories hold {counted} rewards, but {expected} were generated")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if len(losses) != steps or not all(isinstance(x, float) and math.isfinite(x) for x in losses):
        raise SmokeFailure(f"expected {steps} finite losses, got {losses}")
    reloaded = AdvantageEngine(config.engine_options(), group_column=config.group_column)
    load_group_stats(reloaded, output_dir / f"checkpoint-{steps}" / STATS_FILE)
    if reloaded.state_dict() != trainer.advantage_engine.state_dict():
        raise SmokeFailure("the checkpoint's group statistics differ from the trainer's")
    summary = ", ".join(
        f"{g}: n={s['count']:.0f} mean={s['mean']:.3f} std={s['std']:.3f}" for g, s in tracker.summary().items()
    )
    print(f"history  {summary}")
    print(f"P-GRPO SMOKE OK: {steps} steps in {seconds:.1f} s on {device} (vLLM {'on' if use_vllm else 'off'})")


def report(log_history: list[dict[str, Any]]) -> None:
    """One line per step: loss, mean reward, and per group the batch reward mean and the history mean/count."""
    for entry in log_history:
        if "loss" not in entry:
            continue
        groups = sorted({key.split("/")[1] for key in entry if key.startswith("group/") and key.count("/") == 2})
        parts = [
            f"{g}: reward {entry[f'group/{g}/reward_mean']:.3f} history {entry.get(f'group/{g}/history_mean', 0):.3f}"
            f" (n={entry.get(f'group/{g}/history_count', 0):.0f})"
            for g in groups
        ]
        print(f"step {entry['step']:>3}  loss {entry['loss']:+.4f}  reward {entry['reward']:.3f}  " + "  ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
