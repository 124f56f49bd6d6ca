"""Scale and accuracy of the group-reward tracker: 1e6 groups, and 1e9 rewards on a 1e9 offset.

    python benchmarks/bench_scale.py            # full: 1e6 groups; 1e9 rewards in 100 batches (~2-4 minutes)
    python benchmarks/bench_scale.py --quick    # 1e5 groups; 1e8 rewards (~20 s)

Part 1, many groups: time to register 1e6 labels, memory of the statistics per history kind, and the time of one
update / one engine call (encode + update + P-GRPO advantages) as the batch grows, with 1e6 groups known.

Part 2, accuracy: 10 groups with different means and spreads (sigma = 1..10), a slow drift over time (the policy
improving), and an offset of 1e9 on every reward, folded into the cumulative history in big batches. Rewards are
quantized to multiples of 2**-8, which float64 represents exactly at 1e9, so the exact per-group mean and variance
follow from integer sums (Python ints, no rounding at all). Printed: the tracker's error, next to the textbook
one-pass float64 formula var = E[x^2] - E[x]^2 that cancels catastrophically at such offsets. A second run folds
the same kind of data in 1e5 small batches (many merges) to show that the error does not grow with their number.
Also printed: what TRL's float32 reward tensor does to a 1e9 offset before the tracker ever sees it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from fractions import Fraction

import numpy as np
import torch

from bench_engine import best_of
from pgrpo.core import AdvantageEngine, GroupRewardTracker

QUANTUM = 256  # rewards are offset + k / QUANTUM, k integer: exact in float64 up to |offset| ~ 2**44


def rss_mib() -> float:
    """Resident memory of this process (Linux), MiB."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------------------------- part 1: many groups
def many_groups(num_groups: int, rng: np.random.Generator) -> None:
    print(f"== {num_groups:,} groups ==")
    labels = [f"user-{i}" for i in range(num_groups)]
    for kind, options in (("cumulative", {}), ("ema", {"decay": 0.99}), ("window", {"window": 16})):
        gc.collect()
        before = rss_mib()
        tracker = GroupRewardTracker(kind, **options)
        start = time.perf_counter()
        index = tracker.encode(labels)
        register_s = time.perf_counter() - start
        tracker.update(torch.from_numpy(rng.normal(size=num_groups)), index)
        print(
            f"{kind:>10}: register {num_groups:,} str labels {register_s:6.2f} s | statistics tensors "
            f"{tracker.nbytes / 2**20:7.1f} MiB ({tracker.nbytes / num_groups:5.0f} B/group) | "
            f"process RSS +{rss_mib() - before:7.1f} MiB (labels, index dict, tensors)"
        )
        del tracker, index
    gc.collect()

    engine = AdvantageEngine(min_count=1)
    engine.tracker.encode(labels)
    print(f"{'batch':>10} {'update ms':>10} {'engine call ms':>15}   (cumulative history, {num_groups:,} groups known)")
    for batch in (512, 8_192, 131_072, 1_048_576):
        codes = rng.integers(0, num_groups, batch)
        batch_labels = [labels[c] for c in codes]
        rewards = torch.from_numpy(rng.normal(size=batch))
        group_index = torch.from_numpy(codes)
        prompt_index = torch.arange(batch) // 8
        repeats = 5 if batch < 1_000_000 else 2
        update_s = best_of(lambda: engine.tracker.update(rewards, group_index), repeats)  # noqa: B023
        call_s = best_of(lambda: engine(rewards, prompt_index, batch_labels), repeats)  # noqa: B023
        print(f"{batch:>10,} {update_s * 1e3:10.1f} {call_s * 1e3:15.1f}")


# --------------------------------------------------------------------------------------------- part 2: accuracy
class ExactMoments:
    """Per-group sums of k and k^2 in Python ints: the exact mean and variance of offset + k / QUANTUM."""

    def __init__(self, num_groups: int) -> None:
        self.n = [0] * num_groups
        self.s1 = [0] * num_groups
        self.s2 = [0] * num_groups

    def add(self, k: np.ndarray, groups: np.ndarray, num_groups: int) -> None:
        # float64 bincount sums of integers are exact while they stay below 2**53 (checked)
        n = np.bincount(groups, minlength=num_groups)
        s1 = np.bincount(groups, weights=k, minlength=num_groups)
        s2 = np.bincount(groups, weights=k.astype(np.float64) ** 2, minlength=num_groups)
        assert np.abs(s2).max() < 2**53 and np.abs(s1).max() < 2**53
        for g in range(num_groups):
            self.n[g] += int(n[g])
            self.s1[g] += int(s1[g])
            self.s2[g] += int(s2[g])

    def mean_std(self, g: int, offset: float) -> tuple[Fraction, float]:
        n, s1, s2 = self.n[g], self.s1[g], self.s2[g]
        mean = Fraction(offset) + Fraction(s1, n * QUANTUM)
        variance = Fraction(s2 * n - s1 * s1, n * n * QUANTUM * QUANTUM)  # population variance, exact
        return mean, math.sqrt(variance)


def accuracy(total: int, batches: int, offset: float, rng: np.random.Generator, num_groups: int = 10) -> None:
    batch = total // batches
    print(f"== {total:.0e} rewards in {batches:,} batches of {batch:,}, offset {offset:.0e}, {num_groups} groups ==")
    centers = np.linspace(-2.0, 2.0, num_groups)
    spreads = 1.0 + np.arange(num_groups)
    tracker = GroupRewardTracker()
    tracker.encode(list(range(num_groups)))
    exact = ExactMoments(num_groups)
    naive_sum = np.zeros(num_groups)
    naive_sq = np.zeros(num_groups)
    start = time.perf_counter()
    for step in range(batches):
        groups = rng.integers(0, num_groups, batch)
        drift = 3.0 * step / batches  # the policy improves: every group's rewards rise over the run
        x = centers[groups] + drift + spreads[groups] * rng.standard_normal(batch, dtype=np.float32)
        k = np.rint(x * QUANTUM).astype(np.int64)
        rewards = offset + k / QUANTUM  # exact: k / 256 and the sum with 1e9 need < 53 bits
        tracker.update(torch.from_numpy(rewards), torch.from_numpy(groups))
        exact.add(k, groups, num_groups)
        naive_sum += np.bincount(groups, weights=rewards, minlength=num_groups)
        naive_sq += np.bincount(groups, weights=rewards * rewards, minlength=num_groups)
    elapsed = time.perf_counter() - start

    summary = tracker.summary()
    worst = {"mean": 0.0, "std": 0.0, "naive mean": 0.0, "naive std": 0.0}
    header = ("group", "n", "exact mean - offset", "exact std", "|mean err|/std", "std rel err")
    print("{:>5} {:>12} {:>20} {:>10} {:>15} {:>12}".format(*header), "naive |mean err|/std  naive std rel err")
    for g in range(num_groups):
        mean, std = exact.mean_std(g, offset)
        n = exact.n[g]
        assert summary[g]["count"] == n
        mean_err = abs(Fraction(summary[g]["mean"]) - mean) / Fraction(std)
        std_err = abs(summary[g]["std"] - std) / std
        naive_mean = naive_sum[g] / n
        naive_var = naive_sq[g] / n - naive_mean**2
        naive_mean_err = abs(Fraction(naive_mean) - mean) / Fraction(std)
        naive_std_err = abs(math.sqrt(max(naive_var, 0.0)) - std) / std
        for key, value in zip(worst, (mean_err, std_err, naive_mean_err, naive_std_err), strict=True):
            worst[key] = max(worst[key], float(value))
        print(
            f"{g:>5} {n:>12,} {float(mean - Fraction(offset)):>20.6f} {std:>10.6f} {float(mean_err):>15.2e} "
            f"{std_err:>12.2e} {float(naive_mean_err):>20.2e} {naive_std_err:>18.2e}"
        )
    print(
        f"worst: tracker mean error {worst['mean']:.2e} sigma, std relative error {worst['std']:.2e} | one-pass "
        f"E[x^2]-E[x]^2: mean {worst['naive mean']:.2e} sigma, std {worst['naive std']:.2e} | {elapsed:.1f} s, "
        f"{total / elapsed / 1e6:.0f} M rewards/s (generation and references included)"
    )


def float32_note(offset: float) -> None:
    rewards = np.array([offset + 0.3, offset + 1.7, offset + 40.0])
    stored = rewards.astype(np.float32).astype(np.float64) - offset
    spacing = float(np.spacing(np.float32(offset)))
    print(
        f"== TRL stores rewards as float32: at offset {offset:.0e} the spacing is {spacing:g}, so rewards "
        f"offset + [0.3, 1.7, 40.0] arrive as offset + {stored.tolist()} =="
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1e5 groups and 1e8 rewards (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    offset = 1e9
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads")
    many_groups(100_000 if args.quick else 1_000_000, rng)
    accuracy(100_000_000 if args.quick else 1_000_000_000, 10 if args.quick else 100, offset, rng)
    accuracy(10_000_000 if args.quick else 100_000_000, 10_000 if args.quick else 100_000, offset, rng)
    float32_note(offset)


if __name__ == "__main__":
    main()
