"""The advantage engine: a preference-group history, a registered estimator and a loss weighting.

One call per generation batch::

    engine = AdvantageEngine(estimator="pgrpo")
    advantages = engine(rewards, prompt_index, groups, update=True)   # (N,) float64: A_i * w_i

``update=True`` (training) folds the batch into the history, before normalizing
(``update_then_normalize``, the default: no cold start after the first batch) or after
(``normalize_then_update``: the history is strictly the past), and then advances the weighting
(:mod:`pgrpo.core.weighting`; ``none`` by default: w_i = 1). ``update=False`` (evaluation) reads
the history and the weighting and never changes them; groups never seen in training fall back
to ``grpo``, like groups with fewer than ``min_count`` rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from pgrpo.core.estimators import HISTORY_ESTIMATORS, AdvantageBatch, get_estimator
from pgrpo.core.histories import validate_history_options
from pgrpo.core.labels import Label
from pgrpo.core.stats import GroupRewardTracker
from pgrpo.core.weighting import WEIGHTINGS, LossWeighting, WeightingBatch, validate_weighting_options

UpdateOrder = Literal["update_then_normalize", "normalize_then_update"]
UPDATE_ORDERS: tuple[str, ...] = ("update_then_normalize", "normalize_then_update")


@dataclass(frozen=True)
class EngineOptions:
    """Every choice the paper leaves open, with our defaults (see docs/method.md).

    estimator:    name in :data:`pgrpo.core.estimators.ESTIMATORS`.
    history:      "cumulative" (the paper), "ema" or "window".
    decay:        per-reward decay of the ema history, in (0, 1).
    window:       rewards per group kept by the window history.
    eps:          added to the std before dividing (1e-4, as TRL).
    unbiased:     sample (n-1) instead of population (n) history variance.
    min_count:    rewards of history a group needs before it is used; below, fall back to grpo.
    update_order: "update_then_normalize" or "normalize_then_update".
    weighting:    per-completion loss weights multiplying the advantages: "none", "balanced" or "worst_group".
    weight_step:  worst_group step size eta on the standardized shortfall, > 0.
    weight_floor, weight_ceiling: worst_group bounds of a group's weight exp(lambda), in (0, 1] and >= 1.
    """

    estimator: str = "pgrpo"
    history: str = "cumulative"
    decay: float = 0.99
    window: int = 1024
    eps: float = 1e-4
    unbiased: bool = False
    min_count: int = 2
    update_order: str = "update_then_normalize"
    weighting: str = "none"
    weight_step: float = 0.1
    weight_floor: float = 0.2
    weight_ceiling: float = 5.0

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        validate_history_options(self.history, self.decay, self.window)
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}.")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {self.min_count!r}.")
        if self.history == "window" and self.window < self.min_count:
            raise ValueError(
                f"history window={self.window} is shorter than min_count={self.min_count}: the window could never "
                "hold the rewards a group needs before its history is used. Raise window or lower min_count."
            )
        if self.update_order not in UPDATE_ORDERS:
            raise ValueError(f"Unknown update_order {self.update_order!r}; choose one of {', '.join(UPDATE_ORDERS)}.")
        validate_weighting_options(self.weighting, self.weight_step, self.weight_floor, self.weight_ceiling)


class AdvantageEngine:
    """Stateful per-group history + pure estimator + loss weighting. See the module docstring.

    ``group_column`` optionally names the field the labels come from; it is saved with the state and a
    state saved under another name is refused, so a resumed run cannot read the history under other labels.
    After each call, ``weights`` holds that batch's (N,) per-completion weights and ``group_weights`` their
    value per group.
    """

    def __init__(self, options: EngineOptions | None = None, group_column: str | None = None, **overrides: Any) -> None:
        self.options = EngineOptions(**{**asdict(options or EngineOptions()), **overrides})
        self.group_column = group_column
        self.estimator = get_estimator(self.options.estimator)
        self.tracker = self._new_tracker()
        self.weighting = self._new_weighting()
        self.weights = torch.zeros(0, dtype=torch.float64)
        self._weighted_groups = torch.zeros(0, dtype=torch.long)

    def _new_tracker(self) -> GroupRewardTracker:
        return GroupRewardTracker(self.options.history, self.options.decay, self.options.window)

    def _new_weighting(self) -> LossWeighting:
        options = self.options
        return WEIGHTINGS[options.weighting](
            options.weight_step, options.weight_floor, options.weight_ceiling, options.eps
        )

    @property
    def uses_history(self) -> bool:
        return self.options.estimator in HISTORY_ESTIMATORS

    def __call__(
        self,
        rewards: torch.Tensor,
        prompt_index: torch.Tensor,
        groups: Sequence[Label] | torch.Tensor,
        update: bool = True,
    ) -> torch.Tensor:
        """Weighted advantages A_i * w_i of one generation batch.

        Args:
            rewards: (N,) total reward per completion, NaN where missing.
            prompt_index: (N,) long, the prompt each completion answers.
            groups: (N,) preference-group label of each completion's prompt.
            update: fold this batch into the history and the weighting (training) or only read them (evaluation).
        Returns:
            (N,) float64 advantages, multiplied by the loss weights (bit-identical to A_i for weighting="none").
        """
        rewards = rewards.detach().to("cpu", torch.float64).reshape(-1)
        prompt_index = prompt_index.to("cpu", torch.long).reshape(-1)
        if not (len(rewards) == len(prompt_index) == len(groups)):
            raise ValueError(
                f"rewards ({len(rewards)}), prompt_index ({len(prompt_index)}) and groups ({len(groups)}) "
                "must have one entry per completion."
            )
        group_index = self.tracker.encode(groups, add=update)
        update_first = self.options.update_order == "update_then_normalize"
        if update and update_first:
            self.tracker.update(rewards, group_index)
        advantages = self.estimate(rewards, prompt_index, group_index)
        if update and not update_first:
            self.tracker.update(rewards, group_index)
        history_mean = self.tracker.mean[: self.tracker.num_groups]
        self.weights = self.weighting(WeightingBatch(rewards, group_index, history_mean), update)
        self._weighted_groups = group_index
        return advantages.mul_(self.weights)  # the estimator's output is a fresh tensor

    @property
    def group_weights(self) -> torch.Tensor:
        """(K,) the weight of each group's completions in the last batch; NaN for groups absent from it."""
        weights = torch.full((self.tracker.num_groups,), math.nan, dtype=torch.float64)
        known = self._weighted_groups >= 0
        return weights.index_put_((self._weighted_groups[known],), self.weights[known])

    def estimate(self, rewards: torch.Tensor, prompt_index: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
        """Run the estimator against the current history without changing it."""
        mean, std, count = self.tracker.moments(group_index, self.options.unbiased)
        batch = AdvantageBatch(rewards, prompt_index, mean, std, count >= self.options.min_count)
        return self.estimator(batch, self.options.eps)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "options": asdict(self.options),
            "tracker": self.tracker.state_dict(),
            "weighting": self.weighting.state_dict(),
        }
        if self.group_column is not None:
            state["group_column"] = self.group_column
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history and the weighting; the estimator, history settings, weighting and group column must
        match the saved ones. A refused or malformed state changes nothing."""
        saved_column = state.get("group_column")
        if saved_column is not None and self.group_column is not None and saved_column != self.group_column:
            raise ValueError(
                f"The saved group statistics were made with group_column={saved_column!r} but this run uses "
                f"group_column={self.group_column!r}; their labels are different groups. Resume with the same "
                "group_column or start a new run."
            )
        saved = {"weighting": "none", **state["options"]}  # states saved before weightings existed are unweighted
        for name in ("estimator", "history", "weighting"):
            if saved[name] != getattr(self.options, name):
                raise ValueError(
                    f"The saved group statistics were made with {name}={saved[name]!r} but this run uses "
                    f"{name}={getattr(self.options, name)!r}; resume with the same {name} or start a new run."
                )
        tracker, weighting = self._new_tracker(), self._new_weighting()
        tracker.load_state_dict(state["tracker"])
        weighting.load_state_dict(state.get("weighting", {}), tracker.num_groups)
        self.tracker, self.weighting = tracker, weighting
        self.weights, self._weighted_groups = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
