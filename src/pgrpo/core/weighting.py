"""Per-completion loss weights that multiply the advantages: a small registry, orthogonal to the estimator.

Every scheme maps a :class:`WeightingBatch` to weights w of shape (N,) with mean 1 over the batch's N
completions, so the loss keeps its scale and only its split between preference groups changes
(n_g: the batch's completions in group g, K_b: the groups present in the batch):

    none         w_i = 1
    balanced     w_i = N / (K_b n_g(i))                            every present group gets the same total weight
    worst_group  w_i = exp(lambda_g(i)) / mean_j exp(lambda_g(j))  online worst-group (Group DRO) weights

worst_group (Sagawa et al. 2020, Group DRO; cf. Group Robust Preference Optimization, MaxMin-RLHF) is
exponentiated-gradient ascent on per-group log-weights lambda_g (0 at start), the group's loss being its
standardized reward shortfall. After each *training* batch's history update, for every group g with a finite
reward in the batch (the present groups P),

    l_g      = (mbar - mu_g) / (s + eps),        mbar = mean over h in P of mu_h
    lambda_g <- clip(lambda_g + eta * l_g, log(floor), log(ceiling))

with mu_g the group's reward-history mean and s the (population) std of the batch's finite rewards. A group whose
history trails the other present groups' (l_g > 0) gains weight, one ahead loses weight; the steps sum to 0 over
P, so the weights do not drift together when every group improves; absent groups keep theirs. Evaluation reads lambda
and never changes it; a group never updated (or a label unseen in training) has lambda = 0.

Add a scheme with one decorated class::

    @register_weighting("my_weighting")
    class MyWeighting(LossWeighting):
        def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor: ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

WEIGHTINGS: dict[str, type[LossWeighting]] = {}


@dataclass(frozen=True)
class WeightingBatch:
    """Everything a weighting scheme may read (float64 on CPU).

    rewards:       (N,) total reward per completion, NaN where missing.
    group_index:   (N,) long group of each completion; -1 for a label never seen in training (evaluation only).
    history_mean:  (K,) reward-history mean of every tracked group, after this batch's update.
    """

    rewards: torch.Tensor
    group_index: torch.Tensor
    history_mean: torch.Tensor


def register_weighting(name: str) -> Callable[[type[LossWeighting]], type[LossWeighting]]:
    """Add a :class:`LossWeighting` subclass to :data:`WEIGHTINGS` under ``name``."""

    def decorate(cls: type[LossWeighting]) -> type[LossWeighting]:
        if name in WEIGHTINGS:
            raise ValueError(f"A weighting named {name!r} is already registered.")
        cls.name = name
        WEIGHTINGS[name] = cls
        return cls

    return decorate


def validate_weighting_options(weighting: str, step: float, floor: float, ceiling: float) -> None:
    """Raise ``ValueError`` naming the option and the fix when a weighting setting is invalid."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}.")
    if not (is_number(step) and math.isfinite(step) and step > 0):
        raise ValueError(f"weight_step must be a finite number > 0, got {step!r}; e.g. 0.1.")
    if not (is_number(floor) and 0 < floor <= 1):
        raise ValueError(f"weight_floor must lie in (0, 1] (a group's weight never falls below it), got {floor!r}.")
    if not (is_number(ceiling) and math.isfinite(ceiling) and ceiling >= 1):
        raise ValueError(f"weight_ceiling must be a finite number >= 1, got {ceiling!r}; e.g. 5.")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class LossWeighting:
    """A weighting scheme: ``scheme(batch, update)`` gives (N,) float64 weights with mean 1 over the batch.

    Every scheme takes the same settings, read by ``worst_group`` only: ``step`` (eta), ``floor`` and ``ceiling``
    (the bounds of a group's weight before the batch normalization) and ``eps``. A scheme is stateless unless it
    overrides :meth:`state_dict` and :meth:`load_state_dict`.
    """

    name: ClassVar[str]

    def __init__(self, step: float = 0.1, floor: float = 0.2, ceiling: float = 5.0, eps: float = 1e-4) -> None:
        validate_weighting_options(self.name, step, floor, ceiling)
        self.step, self.floor, self.ceiling, self.eps = float(step), float(floor), float(ceiling), float(eps)

    def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor:
        """(N,) weights; ``update`` (training) may advance the scheme's state, evaluation never does."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; :meth:`load_state_dict` restores it exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any], num_groups: int) -> None:
        """Restore a snapshot of a tracker with ``num_groups`` groups."""
        if state:
            raise ValueError(f"The {self.name!r} weighting has no state, but the saved one has {sorted(state)}.")


@register_weighting("none")
class NoWeighting(LossWeighting):
    """w_i = 1: the advantages as the estimator gives them (a broadcast view of one 1.0, no memory per completion)."""

    def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor:
        return torch.ones((), dtype=torch.float64).expand(batch.rewards.shape)


@register_weighting("balanced")
class BalancedWeighting(LossWeighting):
    """w_i = N / (K_b n_g(i)): every group present in the batch gets total weight N / K_b.

    Counts every completion, a missing reward included (its advantage is 0 anyway); in evaluation the labels
    unseen in training (index -1) count as one group.
    """

    def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor:
        shifted = batch.group_index + 1  # -1 (unseen) becomes a group of its own
        per_group = torch.bincount(shifted)
        num_present = int((per_group > 0).sum())
        return shifted.numel() / (num_present * per_group.index_select(0, shifted).to(torch.float64))


@register_weighting("worst_group")
class WorstGroupWeighting(LossWeighting):
    """Online worst-group weights (module docstring): ``log_weights`` (K',) holds lambda, K' <= K groups.

    Defaults. eta = 0.1: l_g is in units of the batch's reward std, mostly |l_g| < 2, so one batch changes a weight
    by at most about 20% and reaching a bound (log 5 = 1.6) takes 8 or more batches of a persistent 2-std shortfall:
    slow enough to average out batch noise, fast enough to act within a few hundred steps. floor 0.2 and ceiling 5
    are symmetric in log space: no group is ever silenced (at least 1/5 of a neutral weight) and none takes over
    (at most 5x), so two groups' weights differ by at most 25x, which bounds the variance the weights add to the
    policy gradient.
    """

    def __init__(self, step: float = 0.1, floor: float = 0.2, ceiling: float = 5.0, eps: float = 1e-4) -> None:
        super().__init__(step, floor, ceiling, eps)
        self.log_weights = torch.zeros(0, dtype=torch.float64)

    def __call__(self, batch: WeightingBatch, update: bool) -> torch.Tensor:
        if update:
            self._step(batch)
        neutral = torch.zeros(1, dtype=torch.float64)  # lambda of groups never updated and of unseen labels
        table = torch.cat([self.log_weights, neutral])
        known = (batch.group_index >= 0) & (batch.group_index < self.log_weights.numel())
        weights = table.index_select(0, torch.where(known, batch.group_index, self.log_weights.numel())).exp()
        return weights / weights.mean()

    def _step(self, batch: WeightingBatch) -> None:
        """lambda_g <- clip(lambda_g + eta l_g, log floor, log ceiling) for every group with a finite reward."""
        log_weights = torch.zeros(batch.history_mean.numel(), dtype=torch.float64)
        log_weights[: self.log_weights.numel()] = self.log_weights
        valid = torch.isfinite(batch.rewards)
        if bool(valid.any()):
            rewards = batch.rewards[valid]
            present = torch.unique(batch.group_index[valid])
            history_mean = batch.history_mean[present]
            difference = history_mean.mean() - history_mean  # centred: the steps of the present groups sum to 0
            shortfall = difference / (rewards.std(correction=0) + self.eps)  # +-inf for s + eps = 0: a bound
            stepped = log_weights[present] + self.step * torch.where(difference == 0, 0.0, shortfall)
            log_weights[present] = stepped.clamp(math.log(self.floor), math.log(self.ceiling))
        self.log_weights = log_weights

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.tolist()}

    def load_state_dict(self, state: dict[str, Any], num_groups: int) -> None:
        log_weights = torch.tensor(state["log_weights"], dtype=torch.float64)
        if log_weights.ndim != 1 or log_weights.numel() > num_groups or not torch.isfinite(log_weights).all():
            raise ValueError(
                f"worst_group weighting state must hold at most {num_groups} finite log-weights (one per group), "
                f"got {state['log_weights']!r:.200}; the file is corrupt."
            )
        self.log_weights = log_weights
