# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
from .transformer_config import TransformerConfig

__all__ = ["TransformerConfig"]
