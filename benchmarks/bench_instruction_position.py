"""Where an untrained SmolLM2-135M-Instruct reads a group's instruction best: per-group held-out reward on `tones`.

    python benchmarks/bench_instruction_position.py                  # 12 prompts x 2 samples per group, seed 0
    python benchmarks/bench_instruction_position.py --per_group 24 --seeds 0 1 2

Four ways of telling the shipped model (no training) who asks, each evaluated as `pgrpo train` evaluates a run
(training's sampler, the same held-out prompts for every way):

- ``none``: the request alone (the `frozen` bench variant);
- ``system``: the group's instruction ("Write a negative one-star review: ...") as the system message;
- ``user``: the same instruction at the start of the user message (`group_prompt_role=user`, the
  `frozen_prompt` variant of configs/bench/smollm2_personalization.yaml);
- ``third_person``: a description of the shopper ("a shopper unhappy with ...") at the start of the user message.

docs/method.md quotes the minority's (``disappointed``) reward under each way from one seed of this script. Each
seed takes ~2-4 min on one 2-core CPU thread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pgrpo.core.conditioning import GroupConditioning, PromptConditioning
from pgrpo.experiments.evaluation import evaluate_policy
from pgrpo.models.smollm2 import load_smollm2
from pgrpo.tasks import build_task

THIRD_PERSON = {
    "delighted": "a shopper who loves this item and is delighted with it.",
    "mixed": "a shopper with mixed feelings: they liked one thing about this item and not another.",
    "disappointed": "a shopper unhappy with this item who is disappointed with it.",
}


def ways(task_descriptions: dict[str, str]) -> dict[str, GroupConditioning]:
    """The four ways of telling the model the group (module docstring)."""
    return {
        "none": GroupConditioning(),
        "system": GroupConditioning(PromptConditioning("{description}", task_descriptions, role="system")),
        "user": GroupConditioning(PromptConditioning("{description}", task_descriptions, role="user")),
        "third_person": GroupConditioning(PromptConditioning("{description}", THIRD_PERSON, role="user")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_group", type=int, default=12, help="held-out prompts per group")
    parser.add_argument("--samples", type=int, default=2, help="sampled completions per prompt")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = build_task("tones")
    model, tokenizer = load_smollm2()
    groups = sorted(task.group_descriptions)
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}  # GRPOConfig's defaults
    print(f"{'way':<14}" + "".join(f"{g:>14}" for g in groups) + f"{'worst':>10}")
    for way, conditioning in ways(dict(task.group_descriptions)).items():
        per_seed = []
        for seed in args.seeds:
            result = evaluate_policy(
                model, tokenizer, task, None, args.per_group * len(groups), args.samples, 32, seed, chat=True,
                conditioning=conditioning, greedy=False, sampling=sampling, prompt_perplexity=False,
            )  # fmt: skip
            per_seed.append([result["per_group_sampled"][g] for g in groups])
        means = np.mean(per_seed, axis=0)
        print(f"{way:<14}" + "".join(f"{m:>14.2f}" for m in means) + f"{means.min():>10.2f}")


if __name__ == "__main__":
    main()
