"""The TRL adapter: ``PGRPOConfig`` and ``PGRPOTrainer``."""

import warnings

from pgrpo.trainer.config import PGRPOConfig
from pgrpo.trainer.trainer import PGRPOTrainer
from pgrpo.trainer.trl_surface import OVERRIDDEN_TRL_METHODS, SUPPORTED_TRL, check_trl_version

# TRL 1.16 (the only TRL pgrpo runs on) reads and toggles activation checkpointing around every generation through
# the model methods transformers 5.23 renamed (is_gradient_checkpointing, gradient_checkpointing_enable/_disable);
# transformers then warns on every run about TRL's calls, not the user's. Only these three messages are silenced.
warnings.filterwarnings(
    "ignore",
    message=r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated",
    category=FutureWarning,
    module="transformers.modeling_utils",
)

__all__ = ["OVERRIDDEN_TRL_METHODS", "SUPPORTED_TRL", "PGRPOConfig", "PGRPOTrainer", "check_trl_version"]
