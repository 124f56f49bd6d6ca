"""Held-out evaluation speed on personas: batched vs one-at-a-time completion log-probabilities, and a whole eval.

    python benchmarks/bench_evaluation.py                 # 30 prompts x 4 samples per persona (210 x 4)
    python benchmarks/bench_evaluation.py --per_group 8   # the old bench's 56 prompts

Uses the warm-started tiny personas policy (built once and cached, ~15 s) as both policy and reference.
``sequence_logprobs`` (the KL to the initial policy) is timed against the one-sequence-at-a-time loop it
replaced, interleaved, on the same sampled completions; then ``evaluate_policy`` as ``pgrpo train`` calls it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pgrpo.experiments.evaluation import balanced_rows, evaluate_policy, sequence_logprobs
from pgrpo.models import encode_prompts, generate_completions, load_policy
from pgrpo.tasks import build_task

torch.set_num_threads(1)


@torch.no_grad()
def one_at_a_time(model, tokenizer, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """The replaced loop: one forward pass per (prompt, completion)."""
    totals = []
    for prompt_ids, completion in zip(encode_prompts(tokenizer, prompts), completions, strict=True):
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + completion_ids])
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        totals.append(torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt_ids) :, None]).sum().item())
    return torch.tensor(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_group", type=int, default=30, help="held-out prompts per persona")
    parser.add_argument("--samples", type=int, default=4, help="sampled completions per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    task = build_task("personas")
    model, tokenizer = load_policy(task, "tiny")
    model.eval()
    num_prompts = 7 * args.per_group
    rows = balanced_rows(task.eval_dataset.to_list(), "group", num_prompts)
    prompts = [row["prompt"] for row in rows for _ in range(args.samples)]
    torch.manual_seed(0)
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=24, do_sample=True)
    times: dict[str, list[float]] = {"one at a time": [], "batched": []}
    for _ in range(args.repeats):
        for name, run in (("one at a time", one_at_a_time), ("batched", sequence_logprobs)):
            start = time.perf_counter()
            values = run(model, tokenizer, prompts, completions)
            times[name].append(time.perf_counter() - start)
            values = values[0] if isinstance(values, tuple) else values
            if name == "one at a time":
                reference = values
            else:
                np.testing.assert_allclose(values, reference, atol=1e-4)
    print(f"sequence_logprobs on {len(prompts)} completions ({num_prompts} prompts x {args.samples} samples):")
    for name, seconds in times.items():
        print(f"  {name:<14} median {np.median(seconds):6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"  speed-up x{np.median(times['one at a time']) / np.median(times['batched']):.1f}")
    start = time.perf_counter()
    evaluate_policy(model, tokenizer, task, reference=model, num_prompts=num_prompts, samples=args.samples,
                    max_new_tokens=24)  # fmt: skip
    print(f"evaluate_policy (policy + reference log-probabilities): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
