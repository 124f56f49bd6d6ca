"""The TRL adapter: ``PGRPOConfig`` and ``PGRPOTrainer``."""

from pgrpo.trainer.config import PGRPOConfig
from pgrpo.trainer.trainer import OVERRIDDEN_TRL_METHODS, SUPPORTED_TRL, PGRPOTrainer, check_trl_version

__all__ = ["OVERRIDDEN_TRL_METHODS", "SUPPORTED_TRL", "PGRPOConfig", "PGRPOTrainer", "check_trl_version"]
