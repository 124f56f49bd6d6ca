"""Per-group reward histories: one small class per kind, behind one interface.

A history keeps, for every preference group g and in float64,

    count      n_g   rewards seen
    weight     W_g   sum of the rewards' weights        (= n_g for the cumulative history)
    weight_sq  V_g   sum of the squared weights         (= n_g for the cumulative history)
    mean       mu_g  weighted mean
    m2         M2_g  weighted sum of squared deviations from mu_g

as (C,) tensors indexed by group, C >= K groups (the capacity at least doubles when it grows). The variance
is M2/W (population) or M2/(W - V/W) (sample, with reliability weights; M2/(n-1) for the cumulative history).

    cumulative  (the paper) every reward has weight 1.
    ema         reward j of the m that a group receives in a batch has weight decay^(m-1-j) and the old history
                is discounted by decay^m: a batch equals feeding its rewards one at a time to an exponential
                moving average of the mean and variance.
    window      the last ``window`` rewards of every group, in a (C, window) ring buffer; the moments are
                recomputed (two-pass) for the groups a batch touches, over the last max(window, m) rewards, m the
                group's rewards in that batch: a batch bigger than the window is normalized by all its rewards,
                never by the spread of only its last ``window`` (the buffer still keeps the last ``window``).

cumulative and ema fold a batch in with the batched (Chan et al.) form of Welford's algorithm: with the batch's own
moments (W_b, mu_b, M2_b), delta = mu_b - mu_g and the old history discounted by a,

    W'  = a W_g + W_b
    mu' = mu_g + delta * W_b / W'
    M2' = a M2_g + M2_b + delta^2 * a W_g * W_b / W'

so every kind gives the same statistics whether rewards arrive in one batch or one at a time (the window: as long as
no group receives more than ``window`` rewards in one batch).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, NamedTuple

import torch

from pgrpo.core.segments import segment_m2, within_segment_rank

HistoryKind = Literal["cumulative", "ema", "window"]
HISTORY_KINDS: tuple[str, ...] = ("cumulative", "ema", "window")


def validate_history_options(history: str, decay: float, window: int) -> None:
    """Raise ``ValueError`` naming the option and the fix when a history setting is invalid."""
    if history not in HISTORY_KINDS:
        raise ValueError(f"Unknown history kind {history!r}; choose one of {', '.join(HISTORY_KINDS)}.")
    if not (0.0 < decay < 1.0) or not math.isfinite(decay):
        raise ValueError(f"history decay must lie strictly between 0 and 1, got {decay!r}; e.g. 0.99.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(
            f"history window must be a positive integer number of rewards, at least 2, got {window!r}: a window "
            "of one reward has no spread, so its advantages would be divided by eps alone; e.g. 1024."
        )


def make_history(kind: HistoryKind, decay: float = 0.99, window: int = 1024) -> RewardHistory:
    """An empty history of ``kind``; ``decay`` matters for ``ema`` only, ``window`` for ``window`` only."""
    validate_history_options(kind, decay, window)
    if kind == "ema":
        return EmaHistory(decay)
    if kind == "window":
        return WindowHistory(window)
    return CumulativeHistory()


def moments_std(weight: torch.Tensor, weight_sq: torch.Tensor, m2: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """sqrt(M2 / W) (population) or sqrt(M2 / (W - V/W)) (sample, reliability weights); 0 where undefined."""
    denominator = weight - weight_sq / weight.clamp_min(1e-300) if unbiased else weight
    variance = torch.where(denominator > 0, m2 / denominator.clamp_min(1e-300), torch.zeros_like(m2))
    return variance.clamp_min(0).sqrt()


class RewardHistory:
    """The interface of every history kind, and the per-group moments they all store.

    A subclass folds a batch in (:meth:`_fold`) and declares any further per-group state in
    :meth:`_per_group_fill` (grown with the moments) and in the state dict.
    """

    MOMENTS: ClassVar[tuple[str, ...]] = ("count", "weight", "weight_sq", "mean", "m2")

    def __init__(self) -> None:
        self.count, self.weight, self.weight_sq, self.mean, self.m2 = (
            torch.zeros(0, dtype=torch.float64) for _ in self.MOMENTS
        )

    @property
    def settings(self) -> dict[str, Any]:
        """The options that define this history (a saved state must have the same ones)."""
        return {}

    def _per_group_fill(self) -> dict[str, float]:
        """Every per-group tensor (first dimension: group) and the value of a group without rewards."""
        return dict.fromkeys(self.MOMENTS, 0.0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-group tensors (capacity included)."""
        return sum(getattr(self, name).nbytes for name in self._per_group_fill())

    def grow(self, num_groups: int) -> None:
        """Make room for ``num_groups`` groups; the capacity at least doubles, so K arrivals copy O(K)."""
        capacity = self.count.numel()
        if num_groups <= capacity:
            return
        capacity = max(num_groups, 2 * capacity)
        for name, fill in self._per_group_fill().items():
            old = getattr(self, name)
            grown = old.new_full((capacity, *old.shape[1:]), fill)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def update(self, rewards: torch.Tensor, group_index: torch.Tensor) -> None:
        """Fold rewards into the history of their groups.

        Args:
            rewards: (M,) finite float64.
            group_index: (M,) long, in [0, capacity).
        """
        capacity = self.count.numel()
        # Work on the groups the batch touches only: O(M log M) instead of O(C) when C > M (many groups, small
        # batches); all groups directly (no sort) otherwise.
        if capacity <= group_index.numel():
            touched, local = torch.arange(capacity), group_index
        else:
            touched, local = torch.unique(group_index, return_inverse=True)
        self._fold(rewards, local, touched)

    def _fold(self, rewards: torch.Tensor, local: torch.Tensor, touched: torch.Tensor) -> None:
        """Fold (M,) rewards in; ``local`` (M,) indexes ``touched`` (T,), the global groups to update."""
        raise NotImplementedError

    def state_dict(self, num_groups: int) -> dict[str, Any]:
        """The first ``num_groups`` groups as JSON-ready lists; :meth:`load_state_dict` restores them exactly."""
        return {name: getattr(self, name)[:num_groups].tolist() for name in self.MOMENTS}

    def load_state_dict(self, state: dict[str, Any], num_groups: int) -> None:
        """Replace every group by the ``num_groups`` groups of ``state``; a malformed state changes nothing."""
        for name, values in self._read_moments(state, num_groups).items():
            setattr(self, name, values)

    def _read_moments(self, state: dict[str, Any], num_groups: int) -> dict[str, torch.Tensor]:
        moments = {name: torch.tensor(state[name], dtype=torch.float64) for name in self.MOMENTS}
        for name, values in moments.items():
            if values.shape != (num_groups,):
                raise ValueError(
                    f"Group-statistics state field {name!r} has {values.numel()} values for {num_groups} groups."
                )
        return moments


class BatchMoments(NamedTuple):
    """A batch's own moments per touched group, each (T,), and the discount ``a`` of the old history."""

    count: torch.Tensor
    weight: torch.Tensor
    weight_sq: torch.Tensor
    mean: torch.Tensor  # relative to the pivot
    m2: torch.Tensor
    discount: torch.Tensor | float


class MergedHistory(RewardHistory):
    """A history that merges each batch's own moments into the old ones (Chan et al.; module docstring)."""

    def _batch_moments(self, shifted: torch.Tensor, local: torch.Tensor, num_touched: int) -> BatchMoments:
        """The batch's moments per touched group, from rewards minus their group's pivot."""
        raise NotImplementedError

    def _fold(self, rewards: torch.Tensor, local: torch.Tensor, touched: torch.Tensor) -> None:
        mean, m2, weight, weight_sq, count = (
            getattr(self, name).index_select(0, touched) for name in ("mean", "m2", "weight", "weight_sq", "count")
        )
        # Sum rewards relative to a pivot inside the data: the group's history mean, or for a group without history
        # its largest reward in this batch. Summing raw rewards on a large common offset (say 1e9) would round away
        # the digits that carry the spread; relative to the pivot, delta = mean_b - mu_g is computed directly.
        pivot = mean.clone()
        fresh = weight.index_select(0, local) == 0
        if bool(fresh.any()):
            pivot.scatter_reduce_(0, local[fresh], rewards[fresh], reduce="amax", include_self=False)
        batch = self._batch_moments(rewards - pivot.index_select(0, local), local, touched.numel())

        has_batch = batch.weight > 0
        w_old = batch.discount * weight
        w_new = w_old + batch.weight
        delta = (pivot - mean) + batch.mean  # batch mean minus history mean; pivot == history mean once it exists
        share = torch.where(has_batch, batch.weight / w_new.clamp_min(1e-300), torch.zeros_like(batch.weight))
        updated = {
            "mean": torch.where(has_batch, mean + delta * share, mean),
            "m2": batch.discount * m2 + batch.m2 + delta * delta * w_old * share,
            "weight": w_new,
            "weight_sq": batch.discount * batch.discount * weight_sq + batch.weight_sq,
            "count": count + batch.count,
        }
        for name, values in updated.items():
            getattr(self, name).index_copy_(0, touched, values)


class CumulativeHistory(MergedHistory):
    """Every reward ever seen, with weight 1 (the paper)."""

    def _batch_moments(self, shifted: torch.Tensor, local: torch.Tensor, num_touched: int) -> BatchMoments:
        mean, m2, count = segment_m2(shifted, local, num_touched)
        return BatchMoments(count, count, count, mean, m2, discount=1.0)


class EmaHistory(MergedHistory):
    """Exponentially decayed rewards: the newest weighs 1, the one before ``decay``, then ``decay**2``, ..."""

    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = float(decay)

    @property
    def settings(self) -> dict[str, Any]:
        return {"decay": self.decay}

    def _batch_moments(self, shifted: torch.Tensor, local: torch.Tensor, num_touched: int) -> BatchMoments:
        rank, count_long = within_segment_rank(local, num_touched)
        count = count_long.to(torch.float64)
        w = self.decay ** (count.index_select(0, local) - 1 - rank.to(torch.float64))  # decay^(m-1-j)
        weight = torch.zeros(num_touched, dtype=torch.float64).index_add_(0, local, w)
        weight_sq = torch.zeros(num_touched, dtype=torch.float64).index_add_(0, local, w * w)
        mean = torch.zeros(num_touched, dtype=torch.float64).index_add_(0, local, w * shifted)
        mean = mean / weight.clamp_min(1e-300)
        deviation = shifted - mean.index_select(0, local)
        m2 = torch.zeros(num_touched, dtype=torch.float64).index_add_(0, local, w * deviation * deviation)
        return BatchMoments(count, weight, weight_sq, mean, m2, discount=self.decay**count)


class WindowHistory(RewardHistory):
    """The last ``size`` rewards of every group, in a (C, size) ring buffer (NaN where empty).

    Slot ``n mod size`` holds a group's n-th reward, so the buffer plus ``count`` give the rewards in order.
    The moments of a group that a batch touches cover its last max(size, m) rewards, m of them from that batch.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        self.buffer = torch.zeros(0, self.size, dtype=torch.float64)

    @property
    def settings(self) -> dict[str, Any]:
        return {"window": self.size}

    def _per_group_fill(self) -> dict[str, float]:
        return {**super()._per_group_fill(), "buffer": math.nan}

    def _fold(self, rewards: torch.Tensor, local: torch.Tensor, touched: torch.Tensor) -> None:
        rank, m = within_segment_rank(local, touched.numel())
        keep = rank >= (m.index_select(0, local) - self.size)  # only the last `size` rewards of a group survive
        seen = self.count.index_select(0, touched).long()
        slot = (seen.index_select(0, local) + rank) % self.size
        self.buffer[touched[local[keep]], slot[keep]] = rewards[keep]
        self.count.index_copy_(0, touched, (seen + m).to(torch.float64))

        in_batch = m > 0
        updated = touched[in_batch]
        rows = self.buffer.index_select(0, updated)
        filled = ~torch.isnan(rows)
        n = filled.sum(1).to(torch.float64)
        mean = torch.where(filled, rows, 0.0).sum(1) / n
        m2 = torch.where(filled, (rows - mean[:, None]) ** 2, 0.0).sum(1)
        overflow = m[in_batch] > self.size
        if bool(overflow.any()):  # these groups: the moments of all their rewards in this batch
            batch_mean, batch_m2, count = segment_m2(rewards, local, touched.numel())
            n = torch.where(overflow, count[in_batch], n)
            mean = torch.where(overflow, batch_mean[in_batch], mean)
            m2 = torch.where(overflow, batch_m2[in_batch], m2)
        for name, values in (("mean", mean), ("m2", m2), ("weight", n), ("weight_sq", n)):
            getattr(self, name).index_copy_(0, updated, values)

    def _chronological(self, num_groups: int) -> list[list[float]]:
        """Every group's rewards in the window, oldest first."""
        seen = self.count[:num_groups].long()
        start = torch.where(seen >= self.size, seen % self.size, 0)
        order = (start[:, None] + torch.arange(self.size)) % self.size
        rows = self.buffer[:num_groups].gather(1, order).tolist()
        return [row[:length] for row, length in zip(rows, seen.clamp_max(self.size).tolist(), strict=True)]

    def state_dict(self, num_groups: int) -> dict[str, Any]:
        return {**super().state_dict(num_groups), "window_values": self._chronological(num_groups)}

    def load_state_dict(self, state: dict[str, Any], num_groups: int) -> None:
        moments = self._read_moments(state, num_groups)
        windows, counts = state["window_values"], moments["count"].long().tolist()
        if len(windows) != num_groups or any(
            len(values) != min(seen, self.size) for values, seen in zip(windows, counts, strict=True)
        ):
            raise ValueError(
                f"Group-statistics state field 'window_values' does not hold the last min(count, {self.size}) "
                "rewards of every group; the file is corrupt."
            )
        buffer = torch.full((num_groups, self.size), math.nan, dtype=torch.float64)
        for group, (values, seen) in enumerate(zip(windows, counts, strict=True)):
            slots = (seen - len(values) + torch.arange(len(values))) % self.size
            buffer[group, slots] = torch.tensor(values, dtype=torch.float64)
        for name, values in moments.items():
            setattr(self, name, values)
        self.buffer = buffer
