"""The pure core of pgrpo: reward statistics, advantage estimators, loss weightings, the engine and group sampling.

No TRL import: torch, numpy and pandas only.
"""

from pgrpo.core.curves import RunningGroupRewards
from pgrpo.core.engine import UPDATE_ORDERS, AdvantageEngine, EngineOptions
from pgrpo.core.estimators import (
    ESTIMATORS,
    HISTORY_ESTIMATORS,
    AdvantageBatch,
    get_estimator,
    prompt_moments,
    register_estimator,
)
from pgrpo.core.histories import HISTORY_KINDS
from pgrpo.core.metrics import group_metrics
from pgrpo.core.sampling import group_balanced_probabilities, sample_group_balanced
from pgrpo.core.segments import segment_moments
from pgrpo.core.stats import GroupRewardTracker
from pgrpo.core.weighting import WEIGHTINGS, LossWeighting, WeightingBatch, register_weighting

__all__ = [
    "ESTIMATORS",
    "HISTORY_ESTIMATORS",
    "HISTORY_KINDS",
    "UPDATE_ORDERS",
    "WEIGHTINGS",
    "AdvantageBatch",
    "AdvantageEngine",
    "EngineOptions",
    "GroupRewardTracker",
    "LossWeighting",
    "RunningGroupRewards",
    "WeightingBatch",
    "get_estimator",
    "group_balanced_probabilities",
    "group_metrics",
    "prompt_moments",
    "register_estimator",
    "register_weighting",
    "sample_group_balanced",
    "segment_moments",
]
