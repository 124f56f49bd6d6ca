"""Where one SmolLM2-135M + LoRA GRPO step goes on a CPU, part by part, before and after the CPU fast path.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_smollm2_step.py [--steps 4] [--kinds before,after]
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_smollm2_step.py --kinds adapters_unshared,adapters

The step is a real ``PGRPOTrainer`` step built as ``pgrpo train --task reviews --model_name_or_path smollm2
--use_peft --lora_r 16`` builds it (chat prompts, LoRA through TRL/PEFT), 8 prompts x 4 completions x 32 tokens.
The trainer's own methods are wrapped with timers; nothing of the step is re-implemented:

- generation: ``_generate_single_turn``; inside it, forwards with more than one new position are the prefill,
  one-position forwards the decode, the rest (padding, sampling, stopping, cache bookkeeping) ``gen other``;
- rewards: ``_calculate_rewards`` (the reviews rating model);
- logp forward: ``_get_per_token_logps_and_entropies`` with gradients on (the loss's forward);
- backward: ``accelerator.backward``; optimizer: between the ``on_pre_optimizer_step`` and ``on_optimizer_step``
  callbacks (clipping + AdamW);
- other: the rest of the step (tokenizing, decoding, advantages, loss arithmetic, logging).

FLOPs per part (counted, not measured, from the shapes of every call of the model's body): a token through the
backbone costs 2 x (non-embedding weights) plus the attention scores (4 x layers x attended positions x width);
the LM head 2 x vocab x width per position where it runs. The backward through a frozen base with LoRA needs only the
input gradients (one more GEMM of each forward shape, attention counted at full context) plus the small LoRA weight
gradients; the chunked LM head recomputes its logits in the backward (two head GEMMs). Each part's achieved GFLOP/s
is printed beside the GEMM peak measured in the same process with ``torch.matmul`` on that part's shapes (the
layer's [tokens, 576] x [576, 1536] etc.); "at peak" is the step's time if every part ran at its peak.

Kinds: "before" is the step as TRL runs it today (2 torch threads); "after" adds
:class:`pgrpo.trainer.cpu.CPUFastPath` (LM head on the completion tokens only, generation on one thread, each
distinct prompt through the body once in the prefill and in the loss's forward and backward); "after_1thread" is
"after" with the whole step on one thread (what ``pgrpo bench`` workers use). "adapters" is "after_1thread" with
per-group adapters on top of the shared LoRA (``group_conditioning="adapter"``, one per star rating), whose rows share
a prompt's positions only within an adapter; "adapters_unshared" the same with ``share_prompt_prefix = False``. All
kinds live in one process and take steps in turn (before, after, after_1thread, before, ...: one thread each, a baton
between them), because the CPU is shared with other work; the first step of each is dropped as warm-up and medians of
the rest are printed.
Same seed, same prompts: the kinds do the same step (the fast path does fewer FLOPs for it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
from trl import ModelConfig, get_peft_config

from pgrpo.experiments.train import as_chat
from pgrpo.models import smollm2_path
from pgrpo.tasks import build_task
from pgrpo.trainer import PGRPOConfig, PGRPOTrainer
from pgrpo.trainer.cpu import torch_threads

PROMPTS, GENERATIONS, COMPLETION = 8, 4, 32


class Kind(NamedTuple):
    fast_path: bool  # the CPU fast path on
    threads: int  # torch threads of the step
    adapters: bool = False  # per-group adapters (group_conditioning="adapter")
    share_prompts: bool = True  # with the fast path: each distinct prompt (and adapter) through the body once


KINDS = {
    "before": Kind(False, 2),
    "after": Kind(True, 2),
    "after_1thread": Kind(True, 1),
    "adapters_unshared": Kind(True, 1, adapters=True, share_prompts=False),
    "adapters": Kind(True, 1, adapters=True),
}
DEFAULT_KINDS = ("before", "after", "after_1thread")
PARTS = ("prefill", "decode", "gen other", "rewards", "logp forward", "backward", "optimizer", "other")


class Timings:
    """Seconds and FLOPs per part of the current step, and the steps recorded so far."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.threads: dict[str, int] = {}
        self.steps: list[tuple[dict[str, float], dict[str, float], dict[str, int]]] = []
        self.in_generate = False
        self.body_calls: list[tuple[float, float, int]] = []  # (forward, backward) FLOPs and tokens, outside generate
        self.warm = False

    def new_step(self) -> None:
        for record in (self.seconds, self.flops, self.tokens):
            record.clear()

    def close_step(self) -> None:
        """Keep the step just taken, unless it is the first (warm-up)."""
        if self.warm:
            self.steps.append((dict(self.seconds), dict(self.flops), dict(self.tokens)))
        self.warm = True

    def add(self, part: str, seconds: float, flops: float = 0.0, tokens: int = 0) -> None:
        self.seconds[part] += seconds
        self.flops[part] += flops
        self.tokens[part] += tokens


def timed(function: Callable, record: Callable[[float, tuple, dict, Any], None]) -> Callable:
    """``function`` with ``record(seconds, args, kwargs, result)`` called after each call."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        record(time.perf_counter() - start, args, kwargs, result)
        return result

    return wrapper


class ModelFlops:
    """FLOP counts of SmolLM2's pieces (see the module docstring)."""

    def __init__(self, config: Any) -> None:
        d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        kv = config.num_key_value_heads * config.head_dim
        self.width, self.layers, self.vocab = d, layers, config.vocab_size
        self.body = layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # weights a token multiplies through

    def backbone(self, tokens: int, attended: float) -> float:
        return 2 * self.body * tokens + 4 * self.layers * attended * self.width * tokens

    def head(self, positions: int) -> float:
        return 2 * self.vocab * self.width * positions


def instrument(trainer: PGRPOTrainer, timings: Timings) -> None:
    """Wrap the trainer's step parts with timers that add into ``timings``."""
    flops = ModelFlops(trainer.model.config)
    policy = trainer.model
    starts: list[float] = []

    def before_forward(module, args, kwargs):
        starts.append(time.perf_counter())

    def after_forward(module, args, kwargs, output):
        seconds = time.perf_counter() - starts.pop()
        rows, new = kwargs["input_ids"].shape
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        context = cache.get_seq_length() if cache is not None else new  # positions in the cache, the new included
        attended = context - new / 2 if new > 1 else context  # mean positions a new token attends to
        if not timings.in_generate:  # the loss's forward: FLOPs taken by record_logps
            forward, backward = flops.backbone(rows * new, attended), flops.backbone(rows * new, context)
            timings.body_calls.append((forward, backward, rows * new))
            return
        part = "prefill" if new > 1 else "decode"
        # generate asks for the logits of each row's last position only
        timings.add(part, seconds, flops.backbone(rows * new, attended) + flops.head(rows), rows * new)
        timings.threads[part] = torch.get_num_threads()

    base = policy.get_base_model()
    base.register_forward_pre_hook(before_forward, with_kwargs=True)
    base.register_forward_hook(after_forward, with_kwargs=True)
    original_generate = trainer._generate_single_turn

    def generate(*args, **kwargs):
        timings.in_generate = True
        start = time.perf_counter()
        inner = timings.seconds["prefill"] + timings.seconds["decode"]
        try:
            return original_generate(*args, **kwargs)
        finally:
            timings.in_generate = False
            inner = timings.seconds["prefill"] + timings.seconds["decode"] - inner
            timings.add("gen other", time.perf_counter() - start - inner)

    trainer._generate_single_turn = generate

    def record_logps(seconds, args, kwargs, result):
        _, input_ids, attention_mask, logits_to_keep = args[:4]
        labelled = int(attention_mask[:, -logits_to_keep:].sum())  # completion tokens: what the loss needs
        scored = labelled if trainer._on_cpu_fast_path() else input_ids.shape[0] * (input_ids.shape[1] - 1)
        forward, backward, tokens = (sum(column) for column in zip(*timings.body_calls, strict=True))
        timings.body_calls.clear()
        part = "logp forward" if torch.is_grad_enabled() else "logp no-grad"
        timings.add(part, seconds, forward + flops.head(scored), tokens)
        timings.threads[part] = timings.threads["backward"] = torch.get_num_threads()
        if torch.is_grad_enabled():
            # the backward: the input gradients through the frozen body, the LoRA weight gradients (negligible), and
            # the chunked head's recomputed logits plus its input gradient (two head GEMMs)
            timings.flops["backward"] += backward + 2 * flops.head(scored)
            timings.tokens["backward"] += tokens

    trainer._get_per_token_logps_and_entropies = timed(trainer._get_per_token_logps_and_entropies, record_logps)
    trainer._calculate_rewards = timed(
        trainer._calculate_rewards, lambda s, a, k, r: timings.add("rewards", s, tokens=len(a[2]))
    )
    trainer.accelerator.backward = timed(trainer.accelerator.backward, lambda s, a, k, r: timings.add("backward", s))


class StepClock(TrainerCallback):
    """Whole-step and optimizer times, closing each step's record."""

    def __init__(self, timings: Timings, name: str) -> None:
        self.timings, self.name = timings, name

    def on_step_begin(self, args, state, control, **kwargs):
        self.timings.new_step()
        self.start = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.timings.add("optimizer", time.perf_counter() - self.optimizer_start)

    def on_step_end(self, args, state, control, **kwargs):
        t = self.timings
        total = time.perf_counter() - self.start
        t.add("other", total - sum(t.seconds[p] for p in PARTS if p != "other"))
        t.add("step", total, sum(t.flops.values()))
        print(f"{self.name} step {state.global_step}: {total:.1f} s", flush=True)
        t.close_step()


class Baton(TrainerCallback):
    """Lets the trainers of several threads take steps in turn (A, B, A, B, ...), one running at a time."""

    def __init__(self, turn: threading.Condition, order: list[str], name: str, threads: int) -> None:
        self.turn, self.order, self.name, self.threads = turn, order, name, threads

    def wait(self) -> None:
        with self.turn:
            self.turn.wait_for(lambda: self.order[0] == self.name)
        torch.set_num_threads(self.threads)  # the kind's torch threads, while it has the turn

    def pass_on(self, finished: bool = False) -> None:
        with self.turn:
            self.order.pop(0)
            if not finished:
                self.order.append(self.name)
            self.turn.notify_all()

    def leave(self) -> None:
        """Take this trainer out of the turns (it failed), so that the others go on."""
        with self.turn:
            if self.name in self.order:
                self.order.remove(self.name)
            self.turn.notify_all()

    def on_train_begin(self, args, state, control, **kwargs):
        self.wait()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < state.max_steps:
            self.pass_on()
            self.wait()

    def on_train_end(self, args, state, control, **kwargs):
        self.pass_on(finished=True)


def build_trainer(kind: str, task: Any, dataset: Any, tokenizer: Any, model_path: str, output_dir: str, steps: int):
    """The trainer `pgrpo train --task reviews --model_name_or_path smollm2 --use_peft --lora_r 16` builds."""
    args = PGRPOConfig(
        output_dir=output_dir,
        estimator="grpo",
        group_column=task.group_column,
        per_device_train_batch_size=PROMPTS * GENERATIONS,
        num_generations=GENERATIONS,
        max_completion_length=COMPLETION,
        learning_rate=5e-4,
        max_steps=steps,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        group_conditioning="adapter" if KINDS[kind].adapters else "none",
    )
    trainer = PGRPOTrainer(
        model=model_path,
        reward_funcs=task.reward_fn,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(ModelConfig(model_name_or_path=model_path, use_peft=True, lora_r=16)),
    )
    trainer.cpu_fast_path, trainer.share_prompt_prefix = KINDS[kind].fast_path, KINDS[kind].share_prompts
    trainer.remove_callback(PrinterCallback)
    return trainer


def gemm_rate(shapes: list[tuple[int, int, int]], threads: int, repeats: int = 3) -> float:
    """GFLOP/s of fp32 ``torch.matmul`` over ``shapes`` (M, K, N) on ``threads`` threads: the best of ``repeats``."""
    with torch_threads(threads):
        total_flops, total_seconds = 0.0, 0.0
        for m, k, n in shapes:
            a, b = torch.randn(m, k), torch.randn(k, n)
            torch.matmul(a, b)
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                torch.matmul(a, b)
                seconds.append(time.perf_counter() - start)
            total_flops += 2 * m * k * n
            total_seconds += min(seconds)
    return total_flops / total_seconds / 1e9


def part_shapes(part: str, rows: int, tokens: float, config: Any) -> list[tuple[int, int, int]]:
    """The GEMM shapes of ``part``: the layer's projections at its token count (and the head for the logp passes)."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    m = max(int(tokens), 1)
    shapes = [(m, d, d), (m, d, kv), (m, d, kv), (m, d, d), (m, d, f), (m, d, f), (m, f, d)]
    if part == "decode":
        shapes.append((rows, d, v))
    if part in ("logp forward", "backward"):
        shapes.append((min(m, 4096), d, 32768))  # TRL's head tile
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="steps per trainer; the first is dropped as warm-up")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"comma-separated, from: {', '.join(KINDS)}")
    cli = parser.parse_args()
    task = build_task("reviews", seed=0)
    model_path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = as_chat(task.train_dataset)
    kinds = cli.kinds.split(",")
    results = {kind: Timings() for kind in kinds}
    turn, order = threading.Condition(), list(kinds)
    with tempfile.TemporaryDirectory() as output_dir:
        trainers, batons = {}, {}
        for kind in kinds:
            trainer = build_trainer(kind, task, dataset, tokenizer, model_path, f"{output_dir}/{kind}", cli.steps)
            instrument(trainer, results[kind])
            trainer.add_callback(StepClock(results[kind], kind))
            batons[kind] = Baton(turn, order, kind, KINDS[kind].threads)
            trainer.add_callback(batons[kind])
            trainers[kind] = trainer
        errors: list[BaseException] = []

        def train(kind: str) -> None:
            try:
                trainers[kind].train()
            except BaseException as error:
                errors.append(error)
                batons[kind].leave()

        threads = [threading.Thread(target=train, args=(kind,)) for kind in kinds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        config = trainers[kinds[0]].model.config
    report(results, config)


def report(results: dict[str, Timings], config: Any) -> None:
    """Median seconds, TFLOP and GFLOP/s per part of each kind, beside the GEMM peak of the part's shapes."""
    print(f"\nSmolLM2-135M + LoRA r=16, reviews, {PROMPTS} prompts x {GENERATIONS} completions x {COMPLETION} tokens")
    for kind, timings in results.items():
        for seconds, *_ in timings.steps:
            print(f"{kind} step: " + ", ".join(f"{p} {seconds.get(p, 0.0):.1f}" for p in (*PARTS, "step")))
    print("medians of the kept steps; peak = fp32 torch.matmul of the part's GEMM shapes at its threads, this process")
    header = f"{'part':13s}" + "".join(
        f" | {kind + ' s':>9s} {'TFLOP':>6s} {'GFLOP/s':>7s} {'peak':>5s}" for kind in results
    )
    print(header)
    rates: dict[tuple, float] = {}
    rows = PROMPTS * GENERATIONS
    at_peak = dict.fromkeys(results, 0.0)  # the step's seconds if every part ran at its GEMM peak
    for part in (*PARTS, "step"):
        line = f"{part:13s}"
        for kind, timings in results.items():
            seconds = statistics.median(s[0].get(part, 0.0) for s in timings.steps)
            flops = statistics.median(s[1].get(part, 0.0) for s in timings.steps)
            tokens = statistics.median(s[2].get(part, 0) for s in timings.steps)
            threads = timings.threads.get(part, torch.get_num_threads())
            peak = "    -"
            if flops and part != "step":
                per_call = rows if part == "decode" else tokens
                key = (part, int(per_call), threads)
                if key not in rates:
                    rates[key] = gemm_rate(part_shapes(part, rows, per_call, config), threads)
                peak = f"{rates[key]:5.0f}"
                at_peak[kind] += flops / (rates[key] * 1e9)
            rate = f"{flops / seconds / 1e9:7.1f}" if flops and seconds else "      -"
            line += f" | {seconds:9.2f} {flops / 1e12:6.3f} {rate} {peak}"
        print(line)
    for kind, timings in results.items():
        step = median_step(timings)
        flops = statistics.median(s[1]["step"] for s in timings.steps)
        print(
            f"{kind}: {step:.1f} s/step, {flops / 1e12:.2f} TFLOP = {flops / step / 1e9:.1f} GFLOP/s; at every part's "
            f"GEMM peak {at_peak[kind]:.1f} s: the step is {step / at_peak[kind]:.2f}x from its peak"
        )
    first, *others = results
    for other in others:
        ratio = median_step(results[first]) / median_step(results[other])
        print(f"speed-up {first} -> {other}: {ratio:.2f}x")


def median_step(timings: Timings) -> float:
    return statistics.median(s[0]["step"] for s in timings.steps)


if __name__ == "__main__":
    main()
