# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class ModelParallelConfig:
    tensor_model_parallel_size: int = 1
    """Intra-layer model parallelism."""

    sequence_parallel: bool = False

    params_dtype: torch.dtype = torch.float32

    pipeline_dtype: torch.dtype = None

    init_method: Optional[Callable] = None

    hidden_dropout: float = 0.1
