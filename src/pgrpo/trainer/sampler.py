"""Group-balanced prompt order for ``GRPOTrainer``: TRL's ``RepeatSampler`` layout over prompts drawn by group.

TRL's ``RepeatSampler`` shuffles the prompts and lays them out for GRPO: each prompt ``G`` times in a row (its
completions), chunks of ``generation_batch_size / G`` prompts, each chunk repeated ``steps_per_generation *
num_iterations`` times. :class:`GroupBalancedSampler` keeps that layout but draws the prompts of each epoch
with replacement from :func:`pgrpo.core.sampling.group_balanced_probabilities`: p(group) ∝ share^alpha.

The draw depends only on (seed, epoch, labels, alpha), so every process of a distributed run draws the same
order (accelerate then gives each process its part, as with TRL's sampler), and a resumed run draws the same
order again: transformers calls ``set_epoch`` and skips the batches already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler
from trl.trainer.utils import RepeatSampler

from pgrpo.core.sampling import sample_group_balanced


class GroupBalancedSampler(Sampler[int]):
    """Prompt indices in TRL's GRPO layout, the prompts drawn with p(group) ∝ share^alpha (module docstring).

    Args:
        group_index: (N,) long group of every dataset row.
        alpha: temperature; 1 = the data as it is, 0 = every group equally often.
        mini_repeat_count: completions per prompt G.
        batch_size: prompts per generation batch.
        repeat_count: times each generation batch is reused (steps_per_generation * num_iterations).
        seed: seed of the draw; epoch e draws from a generator seeded by ``numpy.random.SeedSequence([seed, e])``.
    """

    def __init__(
        self,
        group_index: torch.Tensor,
        alpha: float,
        mini_repeat_count: int,
        batch_size: int,
        repeat_count: int,
        seed: int,
    ) -> None:
        self.group_index = group_index
        self.alpha = alpha
        self.layout = RepeatSampler(range(len(group_index)), mini_repeat_count, batch_size, repeat_count, shuffle=False)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        drawn = sample_group_balanced(self.group_index, self.alpha, len(self.group_index), generator).tolist()
        return (drawn[position] for position in self.layout)

    def __len__(self) -> int:
        return len(self.layout)
