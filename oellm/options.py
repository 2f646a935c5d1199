"""The options and arguments commands share. Those that compile an experiment: `--config-ref`,
`--config-dir`, and the reading of their positional arguments (an experiment file, then
overrides) into a request. Those that act on a compiled bundle: BUNDLE and `--scheduler`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from oellm.compiler.pipeline import CompileRequest

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_REF_HELP = "Take the experiment from the config dirs instead of a file."
CONFIG_DIR_HELP = "Extra config library folder, searched before the built-in one (repeatable)."

# The bundle folder that `reconcile`, `cancel`, `status`, `retry` and `logs` act on.
BUNDLE = click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
# Where the jobs of that bundle run.
SCHEDULER = click.option(
    "--scheduler",
    type=click.Choice(["slurm", "local"]),
    default=None,
    help="Where jobs run: SLURM, or detached processes on this machine "
    "(default: slurm when sbatch is installed, else local).",
)


def config_source_options(ref_help: str, dir_help: str) -> Callable[[F], F]:
    """`--config-ref experiments/NAME` and the repeatable `--config-dir DIR`."""

    def decorate(command: F) -> F:
        command = click.option(
            "--config-dir",
            "config_dirs",
            multiple=True,
            type=click.Path(path_type=Path, file_okay=False),
            help=dir_help,
        )(command)
        return click.option("--config-ref", metavar="experiments/NAME", help=ref_help)(command)

    return decorate


def split_positionals(args: Sequence[str], config_ref: str | None) -> tuple[Path | None, list[str]]:
    """The first positional is the experiment file unless it looks like an override."""
    if args and config_ref is None and not _looks_like_override(args[0]):
        return Path(args[0]), list(args[1:])
    return None, list(args)


def _looks_like_override(text: str) -> bool:
    return "=" in text or text.startswith("~")


def compile_request(
    args: Sequence[str], config_ref: str | None, config_dirs: Sequence[Path]
) -> CompileRequest:
    """The request of `compile`, `plan` and `config`, after checking that its files exist."""
    from oellm.compiler.pipeline import CompileRequest

    experiment, overrides = split_positionals(args, config_ref)
    if experiment is not None and not experiment.is_file():
        raise click.UsageError(f"experiment file '{experiment}' does not exist")
    if experiment is None and config_ref is None:
        raise click.UsageError("give an experiment file or --config-ref experiments/NAME")
    for directory in config_dirs:
        if not directory.is_dir():
            raise click.UsageError(f"--config-dir '{directory}' is not a folder")
    return CompileRequest(
        experiment=experiment,
        config_ref=config_ref,
        config_dirs=tuple(config_dirs),
        overrides=overrides,
        env=dict(os.environ),
    )
