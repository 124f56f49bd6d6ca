"""Drawing sampled tokens: torch.multinomial against inverse-CDF draws (pgrpo.models.token_sampling), side by side.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_token_sampling.py [--repeats 3]     # ~2 minutes

One torch thread (as ``pgrpo bench`` workers and the trainer's generation run). Timed, interleaved in one process,
medians of ``--repeats``:

- one draw per row from softmax probabilities over SmolLM2's 49,152-token vocabulary, for the rows a training step
  (6 prompts x 4 completions) and a held-out batch (64) sample;
- SmolLM2-135M-Instruct + LoRA (r=16, all linear layers, eval mode) sampling 32 tokens for 6 chat prompts x 4
  (``generate_completions``' shared prefill, ``top_k=0`` as training samples), with torch's draw and with the
  inverse-CDF draw.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import pgrpo.models as models
from pgrpo.models import load_tokenizer, smollm2_path
from pgrpo.models.token_sampling import inverse_cdf_multinomial, inverse_cdf_sample

VOCAB, TOKENS = 49_152, 32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def median_seconds(run: Callable[[], object], repeats: int, calls: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| rows | torch.multinomial (ms per draw) | inverse CDF (ms) | speed-up |\n|---|---|---|---|")
    for rows in (24, 64):
        probs = torch.softmax(torch.randn(rows, VOCAB) * 3, -1)
        torch_ms = 1e3 * median_seconds(lambda p=probs: torch.multinomial(p, 1), cli.repeats, calls=20)
        ours_ms = 1e3 * median_seconds(lambda p=probs: inverse_cdf_sample(p), cli.repeats, calls=20)
        print(f"| {rows} | {torch_ms:.1f} | {ours_ms:.1f} | {torch_ms / ours_ms:.1f}x |")

    path = smollm2_path()
    tokenizer = load_tokenizer(path)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=16, target_modules=TARGETS)).eval()
    prompts = [f"Help me write a short review of the {item} I bought." for item in ("dress", "top", "skirt")] * 2
    rows = [prompt for prompt in prompts for _ in range(4)]
    sampling = {"top_k": 0, "top_p": 1.0, "temperature": 1.0}
    times: dict[str, list[float]] = {"torch.multinomial": [], "inverse CDF": []}
    original = models.inverse_cdf_multinomial
    for _ in range(cli.repeats):
        for name, draw in (("torch.multinomial", nullcontext), ("inverse CDF", inverse_cdf_multinomial)):
            models.inverse_cdf_multinomial = draw  # generate_completions' draw for this pass
            start = time.perf_counter()
            models.generate_completions(policy, tokenizer, rows, TOKENS, True, chat=True, sampling=sampling)
            times[name].append(time.perf_counter() - start)
    models.inverse_cdf_multinomial = original
    torch_s, ours_s = (statistics.median(times[name]) for name in times)
    print(f"\nSmolLM2 + LoRA, {len(rows)} rows x up to {TOKENS} sampled tokens (generate_completions, one thread):")
    print(f"torch.multinomial {torch_s:.2f} s, inverse CDF {ours_s:.2f} s ({torch_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()
