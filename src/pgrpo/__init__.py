"""pgrpo: Personalized Group Relative Policy Optimization (P-GRPO) for Hugging Face TRL.

The pure core (``pgrpo.core``) has no TRL import; ``pgrpo.trainer`` adapts it to TRL's
``GRPOTrainer``. ``PGRPOConfig`` and ``PGRPOTrainer`` are imported lazily so that the core stays
light.
"""

from typing import Any

from pgrpo.core import AdvantageEngine, EngineOptions, GroupRewardTracker

__version__ = "0.1.0"
__all__ = ["AdvantageEngine", "EngineOptions", "GroupRewardTracker", "PGRPOConfig", "PGRPOTrainer"]


def __getattr__(name: str) -> Any:
    if name in ("PGRPOConfig", "PGRPOTrainer"):
        import pgrpo.trainer

        return getattr(pgrpo.trainer, name)
    raise AttributeError(f"module 'pgrpo' has no attribute {name!r}")
