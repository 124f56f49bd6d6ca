"""Advantage estimators: small pure functions in a registry, one signature.

Every estimator maps an :class:`AdvantageBatch` to advantages of shape (N,):

    grpo         (R - mean_prompt) / (std_prompt + eps)                       DeepSeekMath GRPO
    dr_grpo       R - mean_prompt                                              Dr. GRPO
    batch_std    (R - mean_prompt) / (std_batch + eps)                        batch-std scaling
    rloo          R - mean of the *other* completions of the prompt           RLOO
    pgrpo        (R - mu_p) / (sigma_p + eps)                                 P-GRPO
    pgrpo_scale  (R - mean_prompt) / (sigma_p + eps)                          GRPO baseline, P-GRPO scale

mean_prompt / std_prompt are taken over the completions of the same prompt (sample std, n-1,
as in TRL), std_batch over every valid reward, (mu_p, sigma_p) from the preference group's
reward history. The history estimators fall back to ``grpo`` for samples whose group has fewer
than ``min_count`` rewards of history. NaN rewards are excluded from every statistic and get
advantage 0; prompts may have any number of completions (a singleton gets 0 from the
per-prompt estimators). Add an estimator with one decorated function::

    @register_estimator("my_estimator")
    def my_estimator(batch: AdvantageBatch, eps: float) -> torch.Tensor: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pgrpo.core.segments import segment_moments

Estimator = Callable[["AdvantageBatch", float], torch.Tensor]
ESTIMATORS: dict[str, Estimator] = {}
HISTORY_ESTIMATORS: set[str] = set()


@dataclass(frozen=True)
class AdvantageBatch:
    """Everything an estimator may read, one entry per completion (all float64 on CPU).

    rewards:        (N,) total reward, NaN where missing.
    prompt_index:   (N,) long, completions of one prompt share an index in [0, P).
    history_mean:   (N,) mean of the completion's preference-group history.
    history_std:    (N,) std of that history.
    history_ready:  (N,) bool, the group has at least ``min_count`` rewards of history.
    """

    rewards: torch.Tensor
    prompt_index: torch.Tensor
    history_mean: torch.Tensor
    history_std: torch.Tensor
    history_ready: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return torch.isfinite(self.rewards)


def register_estimator(name: str, uses_history: bool = False) -> Callable[[Estimator], Estimator]:
    """Add ``fn`` to :data:`ESTIMATORS` under ``name``; NaN rewards are zeroed after it runs."""

    def decorate(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise ValueError(f"An estimator named {name!r} is already registered.")

        def estimator(batch: AdvantageBatch, eps: float) -> torch.Tensor:
            advantages = fn(batch, eps)
            return torch.where(batch.valid, advantages, torch.zeros_like(advantages))

        estimator.__doc__, estimator.__name__ = fn.__doc__, fn.__name__
        ESTIMATORS[name] = estimator
        if uses_history:
            HISTORY_ESTIMATORS.add(name)
        return estimator

    return decorate


def get_estimator(name: str) -> Estimator:
    """The registered estimator ``name``, or a ``ValueError`` listing the choices."""
    if name not in ESTIMATORS:
        raise ValueError(f"Unknown advantage estimator {name!r}; choose one of {', '.join(sorted(ESTIMATORS))}.")
    return ESTIMATORS[name]


def prompt_moments(
    rewards: torch.Tensor, prompt_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-prompt mean, sample std (n-1) and valid count, broadcast back to every completion.

    Args:
        rewards: (N,) float64, NaN where missing.
        prompt_index: (N,) long.
    Returns:
        mean, std, count: (N,) each; std is 0 for prompts with fewer than two valid rewards.
    """
    num_prompts = int(prompt_index.max()) + 1 if prompt_index.numel() else 0
    mean, std, count = segment_moments(rewards, prompt_index, num_prompts, unbiased=True)
    table = torch.stack([mean, std, count], 1).index_select(0, prompt_index)
    return table[:, 0], table[:, 1], table[:, 2]


@register_estimator("grpo")
def grpo(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """(R - mean_prompt) / (std_prompt + eps)."""
    mean, std, _ = prompt_moments(batch.rewards, batch.prompt_index)
    return (batch.rewards - mean) / (std + eps)


@register_estimator("dr_grpo")
def dr_grpo(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """R - mean_prompt (no std division)."""
    mean, _, _ = prompt_moments(batch.rewards, batch.prompt_index)
    return batch.rewards - mean


@register_estimator("batch_std")
def batch_std(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """(R - mean_prompt) / (std_batch + eps), std_batch the sample std of all valid rewards."""
    mean, _, _ = prompt_moments(batch.rewards, batch.prompt_index)
    valid_rewards = batch.rewards[batch.valid]
    std = valid_rewards.std() if valid_rewards.numel() > 1 else torch.zeros((), dtype=batch.rewards.dtype)
    return (batch.rewards - mean) / (std + eps)


@register_estimator("rloo")
def rloo(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """R - mean of the prompt's other valid completions = n/(n-1) (R - mean_prompt); 0 if n < 2."""
    mean, _, count = prompt_moments(batch.rewards, batch.prompt_index)
    scale = torch.where(count > 1, count / (count - 1).clamp_min(1), torch.zeros_like(count))
    return scale * (batch.rewards - mean)


@register_estimator("pgrpo", uses_history=True)
def pgrpo(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """(R - mu_p) / (sigma_p + eps) from the group's history; ``grpo`` where it is not ready."""
    personalized = (batch.rewards - batch.history_mean) / (batch.history_std + eps)
    return with_grpo_fallback(batch, personalized, eps)


@register_estimator("pgrpo_scale", uses_history=True)
def pgrpo_scale(batch: AdvantageBatch, eps: float) -> torch.Tensor:
    """(R - mean_prompt) / (sigma_p + eps); ``grpo`` where the history is not ready."""
    mean, _, _ = prompt_moments(batch.rewards, batch.prompt_index)
    scaled = (batch.rewards - mean) / (batch.history_std + eps)
    return with_grpo_fallback(batch, scaled, eps)


def with_grpo_fallback(batch: AdvantageBatch, advantages: torch.Tensor, eps: float) -> torch.Tensor:
    """``advantages`` where the group's history is ready, ``grpo`` elsewhere (computed only if needed)."""
    if bool(batch.history_ready.all()):
        return advantages
    return torch.where(batch.history_ready, advantages, grpo(batch, eps))
