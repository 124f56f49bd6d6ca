"""Per-preference-group running reward statistics (the P-GRPO history).

:class:`GroupRewardTracker` maps every group label to an index (:class:`~pgrpo.core.labels.GroupLabels`) and
keeps that group's reward moments in one history of the chosen kind, ``cumulative`` (the paper), ``ema`` or
``window`` (:mod:`pgrpo.core.histories`: the math). Rewards are accumulated in float64; NaN rewards are ignored.
The label mapping is part of the state, and the state round-trips exactly through JSON (``state_dict`` /
``load_state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pgrpo.core.histories import HistoryKind, make_history, moments_std
from pgrpo.core.labels import GroupLabels, Label

STATE_VERSION = 1


class GroupRewardTracker:
    """Running reward moments per preference group.

    Args:
        history: ``"cumulative"`` (default, the paper), ``"ema"`` or ``"window"``.
        decay: per-reward decay of the ``ema`` history, in (0, 1).
        window: number of most recent rewards per group kept by the ``window`` history.
    """

    def __init__(self, history: HistoryKind = "cumulative", decay: float = 0.99, window: int = 1024) -> None:
        self._history = make_history(history, decay, window)
        self.history = history
        self.decay = float(decay)
        self.window = int(window)
        self._groups = GroupLabels()

    @property
    def labels(self) -> list[Label]:
        """The K group labels, in index order."""
        return self._groups.labels

    @property
    def num_groups(self) -> int:
        return len(self._groups)

    @property
    def count(self) -> torch.Tensor:
        """(C,) rewards seen per group index, C >= K (read the first ``num_groups``)."""
        return self._history.count

    @property
    def mean(self) -> torch.Tensor:
        """(C,) history mean per group index, C >= K (read the first ``num_groups``)."""
        return self._history.mean

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-group statistics tensors."""
        return self._history.nbytes

    def encode(self, labels: Sequence[Label] | np.ndarray | torch.Tensor, add: bool = True) -> torch.Tensor:
        """(N,) long group index of every label; unseen labels get new indices (``add``) or -1 (evaluation).

        Labels are non-empty ``str`` or ``int``; a call with a bad label raises and registers nothing.
        """
        group_index = self._groups.encode(labels, add)
        self._history.grow(self.num_groups)
        return group_index

    def update(self, rewards: torch.Tensor, group_index: torch.Tensor) -> None:
        """Fold a batch of rewards into the history of their groups; NaN rewards are ignored.

        Args:
            rewards: (N,) rewards (any float dtype; accumulated in float64).
            group_index: (N,) long indices from :meth:`encode`, all >= 0.
        """
        rewards = rewards.detach().to("cpu", torch.float64).reshape(-1)
        group_index = group_index.detach().to("cpu", torch.long).reshape(-1)
        if rewards.shape != group_index.shape:
            raise ValueError(
                f"rewards {tuple(rewards.shape)} and group_index {tuple(group_index.shape)} differ in shape."
            )
        if group_index.numel() and not (group_index.min() >= 0 and group_index.max() < self.num_groups):
            raise ValueError("group_index holds indices this tracker never issued; encode labels with add=True.")
        valid = torch.isfinite(rewards)
        if not valid.all():
            rewards, group_index = rewards[valid], group_index[valid]
        if rewards.numel():
            self._history.update(rewards, group_index)

    def moments(
        self, group_index: torch.Tensor, unbiased: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """History mean, std and reward count of each element's group.

        Args:
            group_index: (N,) long; -1 marks a label this tracker has never seen.
            unbiased: sample (reliability-weighted) instead of population variance.
        Returns:
            mean, std, count: (N,) float64 each; an unseen group has count 0, mean 0 and std 0.
        """
        group_index = group_index.to("cpu", torch.long)
        if not self.num_groups:
            zeros = torch.zeros(group_index.shape, dtype=torch.float64)
            return zeros, zeros.clone(), zeros.clone()
        known = group_index >= 0
        safe = group_index.clamp_min(0)
        mean, weight, weight_sq, m2, count = (
            getattr(self._history, name).index_select(0, safe)
            for name in ("mean", "weight", "weight_sq", "m2", "count")
        )
        std = moments_std(weight, weight_sq, m2, unbiased)
        if bool(known.all()):
            return mean, std, count
        zero = torch.zeros((), dtype=torch.float64)
        return torch.where(known, mean, zero), torch.where(known, std, zero), torch.where(known, count, zero)

    def std(self, unbiased: bool = False) -> torch.Tensor:
        """(K,) history standard deviation of every group; 0 where it is undefined."""
        k, history = self.num_groups, self._history
        return moments_std(history.weight[:k], history.weight_sq[:k], history.m2[:k], unbiased)

    def summary(self, unbiased: bool = False) -> dict[Label, dict[str, float]]:
        """Per-group {count, mean, std}: the history as a plain dict (for logging and reports)."""
        k = self.num_groups
        count, mean, std = self.count[:k].tolist(), self.mean[:k].tolist(), self.std(unbiased).tolist()
        return {label: {"count": count[i], "mean": mean[i], "std": std[i]} for i, label in enumerate(self.labels)}

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; ``load_state_dict`` restores it bit for bit."""
        return {
            "version": STATE_VERSION,
            "history": self.history,
            "decay": self.decay,
            "window": self.window,
            "labels": list(self.labels),
            **self._history.state_dict(self.num_groups),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; the history settings must match this tracker's.

        A state that is refused or malformed leaves the tracker unchanged.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Unsupported group-statistics state version {state.get('version')!r} (expected {STATE_VERSION})."
            )
        for option, value in {"history": self.history, **self._history.settings}.items():
            if state[option] != value:
                raise ValueError(
                    f"Group statistics were saved with {option}={state[option]!r} but this run uses "
                    f"{option}={value!r}; resume with the same setting or start a new run."
                )
        try:
            groups = GroupLabels(state["labels"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"Group-statistics state has invalid labels ({error}); the file is corrupt.") from error
        history = make_history(self.history, self.decay, self.window)
        history.load_state_dict(state, len(groups))
        self._groups, self._history = groups, history
