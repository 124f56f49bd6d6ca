"""Held-out evaluation of a SmolLM2 bench run, part by part, and what sharing a repeated prompt's prefill saves.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_smollm2_evaluation.py [--repeats 3]

As ``configs/bench/smollm2_personalization.yaml`` evaluates a run: SmolLM2-135M-Instruct + LoRA (r=16, all linear
layers, B = 0: the initial policy), the tones task, 48 held-out chat prompts x 2 sampled completions of 32 tokens,
one torch thread (as ``pgrpo bench`` workers). Timed, interleaved in one process (the CPU is shared with other work;
medians of ``--repeats``):

- sampled generation (96 rows in batches of 64, as ``evaluate_policy`` asks), each prompt's two samples prefilled
  once (``generate_with_shared_prefill``) or, as before, every row prefilled;
- the KL to the initial policy on one sample per prompt (48 policy + 48 reference forwards): what a frozen
  reference (learning rate 0, its policy is its initial policy) no longer estimates;
- the perplexity of the 48 rows' held-out real texts, in batches of 16: the padded positions the forward runs on,
  texts batched in the given order against batched by length (counted, not timed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import pgrpo.models as models
from pgrpo.core.conditioning import GroupConditioning
from pgrpo.experiments.evaluation import balanced_rows, kl_to_reference
from pgrpo.models import generate_completions, load_tokenizer, smollm2_path
from pgrpo.models.serving import policy_prompt
from pgrpo.tasks import build_task

PROMPTS, SAMPLES, TOKENS, TEXT_BATCH = 48, 2, 32, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def unshared(model, generate, input_ids, attention_mask, router=None, **kwargs):
    """``generate_with_shared_prefill``'s signature, every row prefilled (the evaluation before sharing)."""
    return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def padded_positions(lengths: list[int], batch: int) -> int:
    """Positions a right-padded forward runs on: each batch of ``batch`` texts padded to its longest."""
    return sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    path = smollm2_path()
    tokenizer = load_tokenizer(path)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=16, target_modules=TARGETS)).eval()
    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    task = build_task("tones", seed=0)
    rows = balanced_rows(task.eval_dataset.to_list(), task.group_column, PROMPTS)
    prompts = [policy_prompt(row["prompt"], None, True, GroupConditioning()) for row in rows]
    sampled = [prompt for prompt in prompts for _ in range(SAMPLES)]
    options = {"do_sample": True, "chat": True, "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0}}
    shared_prefill = models.generate_with_shared_prefill
    seconds: dict[str, list[float]] = {"generation, every row prefilled": [], "generation, shared prefill": [],
                                       "KL to the initial policy": []}  # fmt: skip
    for repeat in range(cli.repeats):
        for name, generate in (("generation, every row prefilled", unshared), ("generation, shared prefill", None)):
            models.generate_with_shared_prefill = generate or shared_prefill
            torch.manual_seed(repeat)
            start = time.perf_counter()
            completions = generate_completions(policy, tokenizer, sampled, TOKENS, **options)
            seconds[name].append(time.perf_counter() - start)
        models.generate_with_shared_prefill = shared_prefill
        start = time.perf_counter()
        kl_to_reference(policy, reference, tokenizer, prompts, completions[::SAMPLES], True, None)
        seconds["KL to the initial policy"].append(time.perf_counter() - start)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()), flush=True)
    print(f"\nSmolLM2-135M + LoRA, tones, {PROMPTS} prompts x {SAMPLES} samples x {TOKENS} tokens, 1 thread; medians")
    for name, values in seconds.items():
        print(f"{name:32s} {statistics.median(values):6.1f} s")
    before, after = (statistics.median(seconds[k]) for k in list(seconds)[:2])
    print(f"shared prefill: generation {before / after:.2f}x faster")
    lengths = [len(tokenizer(row["reference_text"], add_special_tokens=False)["input_ids"]) for row in rows]
    given, by_length = padded_positions(lengths, TEXT_BATCH), padded_positions(sorted(lengths), TEXT_BATCH)
    print(f"perplexity of the held-out real text: {sum(lengths)} tokens; positions run in batches of {TEXT_BATCH}: "
          f"{given} in the given order, {by_length} batched by length ({given / by_length:.2f}x fewer)")  # fmt: skip


if __name__ == "__main__":
    main()
