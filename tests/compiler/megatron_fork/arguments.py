# A Megatron-style argument parser of a fork, for `oellm megatron-args` tests. It is parsed
# with ast and never run (its imports do not exist here).
import argparse
import os

from megatron.core.transformer import TransformerConfig
from megatron.training.argument_utils import ArgumentGroupFactory


def parse_args(extra_args_provider=None, ignore_unknown_args=False):
    parser = argparse.ArgumentParser(description="Megatron-LM Arguments", allow_abbrev=False)
    parser = _add_network_size_args(parser)
    parser = _add_training_args(parser)
    parser = _add_checkpointing_args(parser)
    parser = _add_fork_args(parser)
    return parser.parse_args()


def _add_network_size_args(parser):
    group = parser.add_argument_group(title="network size")
    group.add_argument("--num-layers", type=int, default=None, help="Number of transformer layers.")
    group.add_argument("--hidden-size", type=int, default=None, help="Tansformer hidden size.")
    group.add_argument(
        "--position-embedding-type",
        type=str,
        default="learned_absolute",
        choices=["learned_absolute", "rope", "none"],
        help="Position embedding type.",
    )
    group.add_argument(
        "--disable-bias-linear",
        action="store_false",
        help="Disable bias in the linear layers",
        dest="add_bias_linear",
    )
    transformer_factory = ArgumentGroupFactory(TransformerConfig, exclude=["num_layers"])
    transformer_factory.build_group(parser, "transformer configuration")
    return parser


def _add_training_args(parser):
    group = parser.add_argument_group(title="training")
    group.add_argument("--lr", type=float, default=None, help="Initial learning rate.")
    group.add_argument("--bf16", action="store_true", help="Run model in bfloat16 mode.")
    group.add_argument(
        "--cp-comm-type", nargs="+", type=str, choices=["p2p", "a2a"], default=["p2p"]
    )
    group.add_argument(
        "--use-distributed-optimizer", action=argparse.BooleanOptionalAction, default=False
    )
    group.add_argument("--data-cache-path", default=os.getenv("DATA_CACHE"), help="computed")
    group.add_argument("--eval-iters", type=int, default=-1, help="negative")
    group.add_argument("--log-dirs", action="append", help="no form in the table")
    return parser


def _add_checkpointing_args(parser):
    group = parser.add_argument_group(title="checkpointing")
    group.add_argument("--save", type=str, default=None, help="Output directory to save to.")
    group.add_argument("--load", type=str, default=None, help="Directory to load from.")
    return parser


def _add_fork_args(parser):
    group = parser.add_argument_group(title="our fork")
    group.add_argument("--fork-lr-scale", type=float, default=1.0, help="Only in the fork.")
    group.add_argument("--fork-curriculum", choices=("easy", "hard"), default="easy")
    return parser
