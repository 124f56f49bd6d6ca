"""Per-preference-group running reward statistics (the P-GRPO history).

For every preference group p the tracker keeps, in float64 and O(1) memory per group,

    n_p   number of rewards seen
    W_p   sum of the rewards' weights        (= n_p for the cumulative history)
    V_p   sum of the squared weights         (= n_p for the cumulative history)
    mu_p  weighted mean
    M2_p  weighted sum of squared deviations from mu_p

and folds a whole batch of rewards in at once with the batched (Chan et al.) form of
Welford's algorithm: with the batch's own moments (W_b, mu_b, M2_b) and delta = mu_b - mu_p,

    W'  = a W_p + W_b
    mu' = mu_p + delta * W_b / W'
    M2' = a M2_p + M2_b + delta^2 * a W_p * W_b / W'

where ``a`` discounts the old history. Three history kinds:

* ``cumulative`` (the paper): every reward has weight 1 and a = 1.
* ``ema``: reward j of the m that a group receives in a batch has weight decay^(m-1-j) and
  a = decay^m, so the result equals feeding the rewards one at a time to an exponential
  moving average of the mean and variance with the given decay.
* ``window``: the last ``window`` rewards of every group, kept in a (K, window) ring buffer;
  the moments are recomputed (two-pass) for the groups a batch touches.

Every kind gives the same statistics whether rewards arrive in one batch or one at a time.
The variance is M2/W (population) or M2/(W - V/W) (sample, with reliability weights; this is
M2/(n-1) for the cumulative history).

Group labels may be ``str`` or ``int``. Each new label gets the next index; the mapping is
stable and is part of the state, so it survives checkpoints. The state round-trips exactly
through JSON (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

HistoryKind = Literal["cumulative", "ema", "window"]
HISTORY_KINDS: tuple[str, ...] = ("cumulative", "ema", "window")
Label = str | int
STATE_VERSION = 1


def validate_history_options(history: str, decay: float, window: int) -> None:
    """Raise ``ValueError`` naming the option and the fix when a history setting is invalid."""
    if history not in HISTORY_KINDS:
        raise ValueError(f"Unknown history kind {history!r}; choose one of {', '.join(HISTORY_KINDS)}.")
    if not (0.0 < decay < 1.0) or not math.isfinite(decay):
        raise ValueError(f"history decay must lie strictly between 0 and 1, got {decay!r}; e.g. 0.99.")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"history window must be a positive integer number of rewards, got {window!r}.")


def validate_label(label: Any) -> Label:
    """``label`` as a plain ``str`` or ``int``; ``TypeError``/``ValueError`` naming the fix otherwise."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, int, np.integer)):
        raise TypeError(
            f"Preference-group labels must be str or int, got {label!r} of type {type(label).__name__}; "
            "cast the group column to str or int."
        )
    if isinstance(label, str) and not label.strip():
        raise ValueError("Preference-group label is an empty string; give every prompt a non-empty group.")
    return int(label) if isinstance(label, np.integer) else label


def within_group_rank(group_index: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every element among the elements of its group, in order of appearance.

    Args:
        group_index: (M,) long, values in [0, num_groups).
    Returns:
        rank: (M,) long, 0 for the first element of each group, 1 for the second, ...
        per_group_count: (num_groups,) long, how many elements each group has.
    """
    per_group_count = torch.bincount(group_index, minlength=num_groups)
    order = torch.argsort(group_index, stable=True)
    starts = torch.cumsum(per_group_count, 0) - per_group_count
    rank = torch.empty_like(group_index)
    rank[order] = torch.arange(group_index.numel()) - starts[group_index[order]]
    return rank, per_group_count


def segment_moments(
    values: torch.Tensor, index: torch.Tensor, num_segments: int, unbiased: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std and count of the finite values of every segment (two-pass, no Python loop).

    Args:
        values: (N,) float, NaN/inf entries are ignored.
        index: (N,) long segment of each value, in [0, num_segments).
        unbiased: divide by n-1 instead of n.
    Returns:
        mean, std, count: (num_segments,) each, in values' dtype; 0 where a segment has too few values.
    """
    valid = torch.isfinite(values)
    all_valid = bool(valid.all())
    x = values if all_valid else torch.where(valid, values, torch.zeros_like(values))
    count = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, valid.to(values.dtype))
    mean = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, x) / count.clamp_min(1)
    deviation = x - mean.index_select(0, index)
    if not all_valid:
        deviation = torch.where(valid, deviation, torch.zeros_like(x))
    m2 = torch.zeros(num_segments, dtype=values.dtype).index_add_(0, index, deviation * deviation)
    dof = count - 1 if unbiased else count
    std = torch.where(dof > 0, m2 / dof.clamp_min(1), torch.zeros_like(m2)).sqrt()
    return mean, std, count


def moments_std(weight: torch.Tensor, weight_sq: torch.Tensor, m2: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """sqrt(M2 / W) (population) or sqrt(M2 / (W - V/W)) (sample, reliability weights); 0 where undefined."""
    denominator = weight - weight_sq / weight.clamp_min(1e-300) if unbiased else weight
    variance = torch.where(denominator > 0, m2 / denominator.clamp_min(1e-300), torch.zeros_like(m2))
    return variance.clamp_min(0).sqrt()


class GroupRewardTracker:
    """Running reward moments per preference group (see module docstring for the math).

    Args:
        history: ``"cumulative"`` (default, the paper), ``"ema"`` or ``"window"``.
        decay: per-reward decay of the ``ema`` history, in (0, 1).
        window: number of most recent rewards per group kept by the ``window`` history.
    """

    _MOMENTS = ("count", "weight", "weight_sq", "mean", "m2")

    def __init__(self, history: HistoryKind = "cumulative", decay: float = 0.99, window: int = 1024) -> None:
        validate_history_options(history, decay, window)
        self.history = history
        self.decay = float(decay)
        self.window = int(window)
        self._reset()

    def _reset(self) -> None:
        self.labels: list[Label] = []
        self._index: dict[Label, int] = {}
        empty = torch.zeros(0, dtype=torch.float64)
        self.count, self.weight, self.weight_sq, self.mean, self.m2 = (empty.clone() for _ in range(5))
        # window history only: ring buffer of the last `window` rewards, NaN where empty
        self._buffer = torch.zeros(0, self.window if self.history == "window" else 0, dtype=torch.float64)

    # ------------------------------------------------------------------ labels
    @property
    def num_groups(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[Label] | np.ndarray | torch.Tensor, add: bool = True) -> torch.Tensor:
        """Map group labels to indices, vectorized (one hash pass, a Python step per *distinct* label).

        Args:
            labels: (N,) labels, each a non-empty ``str`` or an ``int``.
            add: give unseen labels a new index (training); when False they map to -1 (evaluation).
        Returns:
            (N,) long tensor of group indices.
        """
        try:
            values = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if values.dtype.kind not in "iu":  # keep every label's own Python type (no str coercion of mixed lists)
                values = np.array(list(labels), dtype=object) if values.dtype.kind != "O" else values
            if values.ndim != 1:
                raise TypeError("nested labels")
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
        except (TypeError, ValueError) as error:  # nested, ragged or unhashable labels (lists, dicts, ...)
            first = next(iter(labels), None)
            raise TypeError(
                f"Preference-group labels must be str or int, got {first!r} of type {type(first).__name__}; "
                "give every prompt one str or int group label."
            ) from error
        if (codes < 0).any():
            position = int(np.flatnonzero(codes < 0)[0])
            raise ValueError(
                f"Preference-group label at position {position} is missing (None or NaN). Every prompt "
                "needs a group label: fill or drop those rows before training."
            )
        distinct = [validate_label(label) for label in uniques.tolist()]  # all checked before any is registered
        lookup = np.array([self._index.get(label, -1) for label in distinct], dtype=np.int64)
        if add:
            for position in np.flatnonzero(lookup < 0).tolist():
                lookup[position] = self._index[distinct[position]] = len(self.labels)
                self.labels.append(distinct[position])
            self._grow(len(self.labels))
        return torch.from_numpy(lookup[codes])

    def _grow(self, num_groups: int) -> None:
        old = self.count.numel()
        if num_groups <= old:
            return
        capacity = max(num_groups, 2 * old)
        for name in self._MOMENTS:
            grown = torch.zeros(capacity, dtype=torch.float64)
            grown[:old] = getattr(self, name)[:old]
            setattr(self, name, grown)
        if self.history == "window":
            grown = torch.full((capacity, self.window), math.nan, dtype=torch.float64)
            grown[:old] = self._buffer[:old]
            self._buffer = grown

    # ------------------------------------------------------------------ updates
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
        if rewards.numel() == 0:
            return
        if self.history == "window":
            self._update_window(rewards, group_index)
        else:
            self._update_weighted(rewards, group_index)

    def _local_view(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The groups a batch touches and each element's position among them.

        Work is done on these groups only: with K groups and N rewards it costs O(N log N) instead of O(K)
        when K > N (many groups, small batches), and uses all groups directly (no sort) otherwise.
        Returns touched (T,) global group indices and local (N,) indices into touched.
        """
        capacity = self.count.numel()
        if capacity <= g.numel():
            return torch.arange(capacity), g
        return torch.unique(g, return_inverse=True)

    def _update_weighted(self, x: torch.Tensor, g_global: torch.Tensor) -> None:
        touched, g = self._local_view(g_global)
        k = touched.numel()
        mean, m2, weight, weight_sq, count = (
            getattr(self, name).index_select(0, touched) for name in ("mean", "m2", "weight", "weight_sq", "count")
        )
        # Sum rewards relative to a pivot inside the data: the group's history mean, or for a group without history
        # its largest reward in this batch. Summing raw rewards on a large common offset (say 1e9) would round away
        # the digits that carry the spread; relative to the pivot, delta = mean_b - mu_p is computed directly.
        pivot = mean.clone()
        fresh = weight.index_select(0, g) == 0
        if bool(fresh.any()):
            pivot.scatter_reduce_(0, g[fresh], x[fresh], reduce="amax", include_self=False)
        shifted = x - pivot.index_select(0, g)
        if self.history == "cumulative":
            m = torch.bincount(g, minlength=k).to(torch.float64)
            discount = torch.ones(k, dtype=torch.float64)
            w_b = v_b = m
            weighted = shifted
        else:
            rank, m_long = within_group_rank(g, k)
            m = m_long.to(torch.float64)
            w = self.decay ** (m.index_select(0, g) - 1 - rank.to(torch.float64))
            discount = self.decay**m
            w_b = torch.zeros(k, dtype=torch.float64).index_add_(0, g, w)
            v_b = torch.zeros(k, dtype=torch.float64).index_add_(0, g, w * w)
            weighted = w * shifted
        has_batch = w_b > 0
        mean_b = torch.zeros(k, dtype=torch.float64).index_add_(0, g, weighted) / w_b.clamp_min(1e-300)  # minus pivot
        deviation = shifted - mean_b.index_select(0, g)
        squares = deviation * deviation if self.history == "cumulative" else w * deviation * deviation
        m2_b = torch.zeros(k, dtype=torch.float64).index_add_(0, g, squares)

        w_old = discount * weight
        w_new = w_old + w_b
        delta = (pivot - mean) + mean_b  # batch mean minus history mean; pivot == history mean once it exists
        share = torch.where(has_batch, w_b / w_new.clamp_min(1e-300), torch.zeros_like(w_b))
        updated = {
            "mean": torch.where(has_batch, mean + delta * share, mean),
            "m2": discount * m2 + m2_b + delta * delta * w_old * share,
            "weight": w_new,
            "weight_sq": discount * discount * weight_sq + v_b,
            "count": count + m,
        }
        for name, values in updated.items():
            getattr(self, name).index_copy_(0, touched, values)

    def _update_window(self, x: torch.Tensor, g_global: torch.Tensor) -> None:
        touched, g = self._local_view(g_global)
        size = self._buffer.shape[1]
        rank, m = within_group_rank(g, touched.numel())
        keep = rank >= (m.index_select(0, g) - size)  # only the last `size` rewards of a group can survive
        seen = self.count.index_select(0, touched).long()
        slot = (seen.index_select(0, g) + rank) % size
        self._buffer[g_global[keep], slot[keep]] = x[keep]
        self.count.index_copy_(0, touched, (seen + m).to(torch.float64))
        touched = touched[m > 0]
        rows = self._buffer.index_select(0, touched)
        filled = ~torch.isnan(rows)
        n = filled.sum(1).to(torch.float64)
        mean = torch.where(filled, rows, 0.0).sum(1) / n
        m2 = torch.where(filled, (rows - mean[:, None]) ** 2, 0.0).sum(1)
        for name, values in (("mean", mean), ("m2", m2), ("weight", n), ("weight_sq", n)):
            getattr(self, name).index_copy_(0, touched, values)

    # ------------------------------------------------------------------ queries
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
            getattr(self, name).index_select(0, safe) for name in ("mean", "weight", "weight_sq", "m2", "count")
        )
        std = moments_std(weight, weight_sq, m2, unbiased)
        if bool(known.all()):
            return mean, std, count
        zero = torch.zeros((), dtype=torch.float64)
        return torch.where(known, mean, zero), torch.where(known, std, zero), torch.where(known, count, zero)

    def std(self, unbiased: bool = False) -> torch.Tensor:
        """(K,) history standard deviation of every group; 0 where it is undefined."""
        k = self.num_groups
        return moments_std(self.weight[:k], self.weight_sq[:k], self.m2[:k], unbiased)

    def summary(self, unbiased: bool = False) -> dict[Label, dict[str, float]]:
        """Per-group {count, mean, std}: the history as a plain dict (for logging and reports)."""
        std = self.std(unbiased).tolist()
        return {
            label: {"count": self.count[i].item(), "mean": self.mean[i].item(), "std": std[i]}
            for i, label in enumerate(self.labels)
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; ``load_state_dict`` restores it bit for bit."""
        k = self.num_groups
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "history": self.history,
            "decay": self.decay,
            "window": self.window,
            "labels": list(self.labels),
        }
        for name in self._MOMENTS:
            state[name] = getattr(self, name)[:k].tolist()
        if self.history == "window":
            state["window_values"] = [self._chronological(i) for i in range(k)]
        return state

    def _chronological(self, group: int) -> list[float]:
        """The window's rewards of one group, oldest first."""
        seen = int(self.count[group].item())
        order = [(seen + j) % self.window for j in range(self.window)] if seen >= self.window else range(seen)
        return [self._buffer[group, j].item() for j in order]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; the history settings must match this tracker's."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Unsupported group-statistics state version {state.get('version')!r} (expected {STATE_VERSION})."
            )
        relevant = {"history": True, "decay": self.history == "ema", "window": self.history == "window"}
        for option, matters in relevant.items():
            if matters and state[option] != getattr(self, option):
                raise ValueError(
                    f"Group statistics were saved with {option}={state[option]!r} but this run uses "
                    f"{option}={getattr(self, option)!r}; resume with the same setting or start a new run."
                )
        labels = state["labels"]
        if len(set(labels)) != len(labels) or not all(
            isinstance(x, (str, int)) and not isinstance(x, bool) for x in labels
        ):
            raise ValueError("Group-statistics state has duplicate or non str/int labels; the file is corrupt.")
        fields = {name: torch.tensor(state[name], dtype=torch.float64) for name in self._MOMENTS}
        for name, values in fields.items():
            if values.shape != (len(labels),):
                raise ValueError(
                    f"Group-statistics state field {name!r} has {values.numel()} values for {len(labels)} groups."
                )
        self._reset()
        self.labels = list(labels)
        self._index = {label: i for i, label in enumerate(labels)}
        self._grow(len(labels))
        for name, values in fields.items():
            getattr(self, name)[: len(labels)] = values
        if self.history == "window":
            for i, values in enumerate(state["window_values"]):
                start = int(self.count[i].item()) - len(values)
                for j, value in enumerate(values):
                    self._buffer[i, (start + j) % self.window] = value
