# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
# The argument parser of the synthetic checkout: hand-written groups and factory-built ones.
import argparse

import torch

from megatron.core.transformer import TransformerConfig
from megatron.training.argument_utils import ArgumentGroupFactory


def parse_args():
    parser = argparse.ArgumentParser(description="Megatron-LM Arguments", allow_abbrev=False)
    parser = _add_network_size_args(parser)
    parser = _add_training_args(parser)
    parser = _add_checkpointing_args(parser)
    parser = _add_external_args(parser)
    return parser.parse_args()


def _add_network_size_args(parser):
    exclude = [
        # a callable: no command line form
        "init_method",
        "params_dtype",
    ]
    exclude.append("pipeline_dtype")
    exclude += ["num_moe_experts"]
    transformer_factory = ArgumentGroupFactory(TransformerConfig, exclude=exclude)
    group = transformer_factory.build_group(parser, "transformer configuration")
    group.add_argument("--num-experts", type=int, default=None, help="Number of experts.")
    group.add_argument(
        "--position-embedding-type", type=str, default="rope", choices=["rope", "none"]
    )
    # Already added by the factory from TransformerConfig.hidden_dropout.
    group.add_argument("--hidden-dropout", type=float, default=0.0)
    return parser


def _add_training_args(parser):
    from megatron.training.config import TrainingConfig

    train_factory = ArgumentGroupFactory(TrainingConfig, exclude=["train_hook"])
    group = train_factory.build_group(parser, "training")
    group.add_argument("--lr", type=float, default=None, help="Initial learning rate.")
    group.add_argument("--dtype", type=torch.dtype, default=None)
    return parser


def _add_checkpointing_args(parser):
    from megatron.training.config import CheckpointConfig

    ckpt_factory = ArgumentGroupFactory(CheckpointConfig, exclude=["most_recent_k"])
    ckpt_factory.build_group(parser, "checkpointing")
    return parser


def _add_external_args(parser):
    from some_other_package import ExternalConfig

    ArgumentGroupFactory(ExternalConfig).build_group(parser, "external")
    return parser
