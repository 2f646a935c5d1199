# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
from dataclasses import dataclass, field
from typing import List, Optional, Union

from ..model_parallel_config import ModelParallelConfig
from .enums import AttnBackend


@dataclass
class TransformerConfig(ModelParallelConfig):
    num_layers: int = 0
    """Number of transformer layers."""

    layernorm_epsilon: float = field(
        default=1e-5, metadata={"argparse_meta": {"arg_names": ["--norm-epsilon"]}}
    )

    attention_backend: AttnBackend = AttnBackend.auto

    num_moe_experts: Optional[int] = None

    moe_router_load_balancing_type: Union[str, List[str]] = "aux_loss"

    recompute_modules: Optional[List[str]] = None

    # Declared again: keeps ModelParallelConfig's place, takes this default.
    tensor_model_parallel_size: int = 2

    bias_dropout_fusion: bool = True

    cpu_offloading_weights: "torch.Tensor" = None
