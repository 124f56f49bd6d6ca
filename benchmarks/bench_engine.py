"""Advantage-engine throughput and memory, side by side with a plain Python-loop reference.

    python benchmarks/bench_engine.py            # full grid: 1e3..1e7 rewards x 10..1e5 groups
    python benchmarks/bench_engine.py --quick    # small grid (seconds)

One engine call = encode the labels + fold the batch into the history + P-GRPO advantages.
The reference is the textbook per-sample Welford loop over a dict (run up to 1e5 rewards, where
it takes seconds). Also prints the tracker's memory after 1..1000 updates for each history kind.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from pgrpo.core import AdvantageEngine

torch.set_num_threads(2)


def python_loop_reference(rewards: list[float], labels: list, group_size: int, eps: float = 1e-4) -> list[float]:
    """Per-sample Welford update in a dict, then (R - mu_p) / (sigma_p + eps) per sample."""
    stats: dict = {}
    for reward, label in zip(rewards, labels, strict=True):
        n, mean, m2 = stats.get(label, (0, 0.0, 0.0))
        n += 1
        delta = reward - mean
        mean += delta / n
        m2 += delta * (reward - mean)
        stats[label] = (n, mean, m2)
    out = []
    for reward, label in zip(rewards, labels, strict=True):
        n, mean, m2 = stats[label]
        out.append((reward - mean) / (math.sqrt(m2 / n) + eps))
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(num_rewards: int, num_groups: int, label_kind: str, rng: np.random.Generator) -> tuple[float, float]:
    codes = rng.integers(0, num_groups, num_rewards)
    labels = codes if label_kind == "int" else np.array([f"user-cluster-{c}" for c in codes], dtype=object)
    rewards = torch.from_numpy(rng.normal(size=num_rewards))
    prompt_index = torch.arange(num_rewards) // 8
    engine = AdvantageEngine(estimator="pgrpo")
    engine(rewards, prompt_index, labels)  # warm-up: registers the labels
    repeats = 5 if num_rewards <= 1_000_000 else 2
    engine_s = best_of(lambda: engine(rewards, prompt_index, labels), repeats)
    loop_s = math.nan
    if num_rewards <= 100_000:
        reward_list, label_list = rewards.tolist(), labels.tolist()
        loop_s = best_of(lambda: python_loop_reference(reward_list, label_list, 8), 2)
    return num_rewards / engine_s, num_rewards / loop_s


def memory_table() -> None:
    print("\nTracker memory (bytes of state) vs history length, 1e4 groups, 1e4 rewards per update")
    print(f"{'history':<12}" + "".join(f"{f'{u} upd':>14}" for u in (1, 10, 100, 1000)))
    rng = np.random.default_rng(0)
    for history, options in [("cumulative", {}), ("ema", {"decay": 0.99}), ("window", {"window": 64})]:
        engine = AdvantageEngine(estimator="pgrpo", history=history, **options)
        sizes, done = [], 0
        for target in (1, 10, 100, 1000):
            while done < target:
                labels = rng.integers(0, 10_000, 10_000)
                engine(torch.from_numpy(rng.normal(size=10_000)), torch.arange(10_000) // 8, labels)
                done += 1
            sizes.append(engine.tracker.nbytes)
        print(f"{history:<12}" + "".join(f"{s:>14,}" for s in sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grid only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    groups = [10, 1_000] if args.quick else [10, 1_000, 10_000, 100_000]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'rewards':>10} {'groups':>8} {'labels':>6} {'engine rew/s':>14} {'python loop rew/s':>18} {'speed-up':>9}")
    for num_rewards in sizes:
        for num_groups in groups:
            if num_groups > num_rewards:
                continue
            for label_kind in ("int", "str"):
                if label_kind == "str" and num_rewards > 1_000_000:
                    continue
                engine_rate, loop_rate = throughput(num_rewards, num_groups, label_kind, rng)
                speedup = engine_rate / loop_rate if math.isfinite(loop_rate) else math.nan
                print(
                    f"{num_rewards:>10,} {num_groups:>8,} {label_kind:>6} {engine_rate:>14,.0f} "
                    f"{loop_rate:>18,.0f} {speedup:>9.1f}"
                )
    memory_table()


if __name__ == "__main__":
    main()
