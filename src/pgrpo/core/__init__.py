"""The pure core of pgrpo: reward statistics, advantage estimators and the engine (no TRL import)."""

from pgrpo.core.engine import UPDATE_ORDERS, AdvantageEngine, EngineOptions
from pgrpo.core.estimators import (
    ESTIMATORS,
    HISTORY_ESTIMATORS,
    AdvantageBatch,
    get_estimator,
    prompt_moments,
    register_estimator,
)
from pgrpo.core.stats import HISTORY_KINDS, GroupRewardTracker, segment_moments

__all__ = [
    "ESTIMATORS",
    "HISTORY_ESTIMATORS",
    "HISTORY_KINDS",
    "UPDATE_ORDERS",
    "AdvantageBatch",
    "AdvantageEngine",
    "EngineOptions",
    "GroupRewardTracker",
    "get_estimator",
    "prompt_moments",
    "register_estimator",
    "segment_moments",
]
