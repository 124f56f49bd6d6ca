"""Training curves per group that do not depend on which groups a step happened to draw (pure: no TRL).

A generation batch holds only the groups it drew: a group with 4-10% of the prompts is absent from most batches, so a
"worst group" taken over each batch's groups is mostly the worst of the majority. :class:`RunningGroupRewards` keeps,
for every group seen so far in training, its **running reward**

    running_g = mean of m_g(t) over the last ``window`` batches t in which g had a finite reward

where ``m_g(t)`` is the mean of g's finite rewards in batch t (each batch counts once, whatever its number of rows).
A group absent from a batch keeps its value (carried); ``window=1`` is the last value carried. The worst group is the
minimum over every group with a running value, present in the batch or not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from pgrpo.core.labels import GroupLabels, Label
from pgrpo.core.segments import segment_moments

WORST_RUNNING = "group/worst_reward_running"


class RunningGroupRewards:
    """Each group's running reward over the training batches (module docstring).

    Args:
        window: batches (in which the group appeared) averaged per group, >= 1.
    """

    def __init__(self, window: int = 5) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}.")
        self.window = window
        self._groups = GroupLabels()
        self._means: list[deque[float]] = []

    def update(self, rewards: torch.Tensor, groups: Sequence[Label]) -> None:
        """Fold one batch in: append each present group's mean finite reward (a group without one is unchanged).

        Args:
            rewards: (N,) float, NaN where a reward is missing.
            groups: N labels.
        """
        group_index = self._groups.encode(groups)
        self._means.extend(deque(maxlen=self.window) for _ in range(len(self._groups) - len(self._means)))
        mean, _, count = segment_moments(rewards.detach().to("cpu", torch.float64), group_index, len(self._groups))
        for index in torch.nonzero(count > 0).flatten().tolist():
            self._means[index].append(mean[index].item())

    def values(self) -> dict[Label, float]:
        """{label: running reward} of every group with at least one finite batch mean, in first-seen order."""
        pairs = zip(self._groups.labels, self._means, strict=True)
        return {label: sum(means) / len(means) for label, means in pairs if means}

    def metrics(self, max_logged_groups: int = 32) -> dict[str, float]:
        """``group/worst_reward_running`` (absent before any finite reward) and, while at most ``max_logged_groups``
        groups were seen, ``group/<label>/reward_running`` of every group with a running value."""
        values = self.values()
        metrics = {WORST_RUNNING: min(values.values())} if values else {}
        if len(self._groups) <= max_logged_groups:
            metrics |= {f"group/{label}/reward_running": value for label, value in values.items()}
        return metrics
