# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
from megatron.training.config.training_config import CheckpointConfig, TrainingConfig

__all__ = ["CheckpointConfig", "TrainingConfig"]
