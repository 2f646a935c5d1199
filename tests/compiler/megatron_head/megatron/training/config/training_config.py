# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
import signal
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal, Optional


@dataclass(kw_only=True)
class TrainingConfig:
    """Configuration of the training loop."""

    registry: ClassVar[dict[str, int]] = {}

    counter: ClassVar = 0

    micro_batch_size: int | None = None
    """Batch size per model instance."""

    rampup_batch_size: list[int] | None = field(
        default=None, metadata={"argparse_meta": {"nargs": 3}}
    )
    """Three numbers: argparse nargs=3, which the table has no form for."""

    exit_signal: signal.Signals = signal.SIGTERM
    """A standard-library enum: its member names."""

    empty_unused_memory_level: Literal[0, 1, 2] = 0

    iterations_to_skip: list[int] = field(default_factory=list)

    profile_ranks: list[int] = field(default_factory=lambda: [0])

    use_nsys_profiler: bool = field(
        default=False,
        metadata={"argparse_meta": {"arg_names": ["--profile"], "dest": "profile"}},
    )

    override_opt_param_scheduler: bool = field(
        default=False,
        metadata={
            "argparse_meta": {
                "arg_names": ["--override-opt_param-scheduler", "--override-opt-param-scheduler"]
            }
        },
    )

    manual_gc_eval: bool = True
    """Default True: --no-manual-gc-eval / --disable-manual-gc-eval."""

    check_for_nan: Optional[bool] = None
    """A None default compares unequal to False: store_false too."""

    step: int = field(default=0, init=False)
    """Not an __init__ argument, so not a command line one."""

    train_hook: Callable = None

    data_path: list[str] | str | None = None
    """A union the factory cannot infer a type for: Megatron would fail on it."""

    moe_layer_freq: int | list[int] = field(default=1, metadata={"argparse_meta": {"type": str}})
    """The same kind of union, rescued by argparse_meta."""


@dataclass(kw_only=True)
class CheckpointConfig:
    """Configuration of checkpointing."""

    save: Optional[str] = None
    """Output directory to save checkpoints to."""

    load: Optional[str] = None
    """Directory containing a model checkpoint."""

    save_interval: Optional[int] = field(
        default=None,
        metadata={
            "argparse_meta": {"arg_names": ["--save-interval", "--persistent-save-interval"]}
        },
    )

    most_recent_k: int = -1
