"""`oellm compile`: an experiment and its overrides (or the arguments a bundle records) into a
bundle written in place, with the state dir it follows; `--check` compares instead of writing.
Registered by `oellm.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oellm.bundle_files import LOCK_NAME
from oellm.errors import EXIT_DIFFERENT, EXIT_OK
from oellm.guard import guarded
from oellm.options import (
    CONFIG_DIR_HELP,
    CONFIG_REF_HELP,
    compile_request,
    config_source_options,
)
from oellm.stopping import terminable

if TYPE_CHECKING:
    from oellm.compiler.pipeline import CompiledBundle, CompileRequest
    from oellm.reconciler.identity import StateChange


def _complete_compile_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[Any]:
    from oellm.completion import complete_compile_args

    return complete_compile_args(ctx, param, incomplete)


@click.command("compile")
@click.argument(
    "args",
    nargs=-1,
    metavar="[EXPERIMENT.yaml] [OVERRIDES]...",
    shell_complete=_complete_compile_args,
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="Bundle folder to write (replaced atomically when complete).",
)
@config_source_options(CONFIG_REF_HELP, CONFIG_DIR_HELP)
@click.option(
    "--moved",
    "moved",
    multiple=True,
    metavar="OLD=NEW",
    help="A job renamed since the last compile keeps its history (repeatable; or `moved:` in "
    "the config).",
)
@click.option(
    "--move-state",
    is_flag=True,
    help="The state dir moves with this compile (another output dir, say): move the records "
    "of the running experiment along.",
)
@click.option(
    "--fresh-state",
    is_flag=True,
    help="The state dir moves with this compile: start over there; jobs recorded in the old "
    "one are no longer followed.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing: exit 1 with a summary and diff when the bundle on disk differs from "
    "what the config gives, 0 when it matches (for pre-commit and CI).",
)
@guarded
def compile_command(
    args: tuple[str, ...],
    output: Path,
    config_ref: str | None,
    config_dirs: tuple[Path, ...],
    moved: tuple[str, ...],
    move_state: bool,
    fresh_state: bool,
    check: bool,
) -> int:
    """Compile an experiment into a bundle of sbatch scripts and a plan lockfile. Without an
    experiment or overrides, compile again with the arguments the bundle records.

    \b
    OVERRIDES change the composed config:
      backend.megatron.lr=1e-4   set an existing key
      +new.key=1                 add a key
      ++any.key=1                add or set
      ~drop.key                  delete a key
      slurm=leonardo             choose a config group option

    A stage of 1,000 jobs or more is compiled by one process per core (at most 8);
    OELLM_COMPILE_WORKERS=N sets how many (1: one process). The bundle is the same.
    """
    pairs = {}
    for item in moved:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise click.UsageError(f"--moved {item!r}: write OLD=NEW")
        pairs[old] = new
    if not args and config_ref is None and not config_dirs and not pairs:
        request = _recorded_request(output)
    else:
        request = dataclasses.replace(
            compile_request(args, config_ref, config_dirs), moved=pairs, bundle_dir=output
        )
    if move_state and fresh_state:
        raise click.UsageError("--move-state and --fresh-state exclude each other")
    if check:
        return _check(request, output, move_state, fresh_state)
    from oellm.cli import from_shell
    from oellm.compiler.write import stage, write_bundle
    from oellm.reconciler.identity import apply_state_change

    # Each file goes to the staging folder as it is compiled: a large sweep is never held in
    # memory; the folder replaces the bundle once complete (or is removed on an error, and
    # when the compile is stopped: Ctrl-C, `kill`, the terminal closed).
    with terminable(leave_ignored=from_shell()), stage(output) as files:
        bundle, change = _compile(request, output, move_state, fresh_state, files)
        # With the swap: a state dir that moves never moves without its bundle.
        write_bundle(bundle, output, with_swap=lambda: apply_state_change(change))
        if change.note:
            click.echo(change.note)
    jobs = len(bundle.lock.jobs)
    click.echo(
        f"wrote {output}: {jobs} job{'s' if jobs != 1 else ''}, bundle {bundle.lock.bundle_id[:12]}"
    )
    return EXIT_OK


def _check(request: CompileRequest, output: Path, move_state: bool, fresh_state: bool) -> int:
    """`compile --check`: each file is compared with the bundle on disk as it is compiled
    (`CheckedFiles`); nothing is written."""
    from oellm.compiler.checking import CheckedFiles
    from oellm.compiler.pipeline import compile_bundle
    from oellm.diff_cli import check_bundle

    checked = CheckedFiles(output)
    bundle = compile_bundle(request, Progress(), files=checked)
    # A lockfile on disk that is the one just compiled (its project and tag key included)
    # leaves the state dir where it is and keeps that key already: what the state change
    # would find, without reading the lockfile once more.
    if not checked.same(LOCK_NAME):
        bundle, _ = _with_state(bundle, output, move_state, fresh_state)
    same, text = check_bundle(bundle, output)
    if not same:
        click.echo(text, nl=not text.endswith("\n"))
        return EXIT_DIFFERENT
    click.echo(f"{output} is up to date")
    return EXIT_OK


def _compile(
    request: CompileRequest,
    output: Path,
    move_state: bool,
    fresh_state: bool,
    files: MutableMapping[str, bytes] | None = None,
) -> tuple[CompiledBundle, StateChange]:
    """The bundle, with the state dir it follows: kept, moved (with its tag key) or started
    afresh."""
    from oellm.compiler.pipeline import compile_bundle

    bundle = compile_bundle(request, Progress(), files=files)
    return _with_state(bundle, output, move_state, fresh_state)


def _with_state(
    bundle: CompiledBundle, output: Path, move_state: bool, fresh_state: bool
) -> tuple[CompiledBundle, StateChange]:
    """Whether the state dir moves with this compile, and the bundle with the tag key it
    keeps."""
    from oellm.compiler.pipeline import with_state_key
    from oellm.reconciler.identity import state_change

    change = state_change(output, bundle.lock.project, move_state, fresh_state)
    if change.key is not None:
        bundle = with_state_key(bundle, change.key)
    return bundle, change


class Progress:
    """`compiling 1234/10000 jobs` on stderr, only for a terminal and only for big sweeps."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 200:
            return
        percent = done * 100 // total
        if percent != self.shown:
            self.shown = percent
            end = "\n" if done == total else ""
            click.echo(f"\rcompiling {done}/{total} jobs ({percent}%)", err=True, nl=False)
            if end:
                click.echo("", err=True)


def _recorded_request(output: Path) -> CompileRequest:
    """`oellm compile -o BUNDLE` with no experiment: the arguments BUNDLE was compiled with."""
    from oellm.compiler.pipeline import CompileRequest
    from oellm.compiler.provenance import recorded_arguments

    lock_path = output / LOCK_NAME
    if not lock_path.is_file():
        raise click.UsageError(
            f"give an experiment file or --config-ref experiments/NAME ({lock_path} does not "
            "exist, so there are no recorded arguments to reuse)"
        )
    try:
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"{lock_path} cannot be read: {exc}") from None
    recorded = recorded_arguments(output, lock)
    experiment = recorded["experiment"]
    if experiment is not None and not experiment.is_file():
        raise click.UsageError(
            f"{lock_path} was compiled from '{experiment}', which does not exist (relative "
            "to the bundle's folder)"
        )
    return CompileRequest(env=dict(os.environ), bundle_dir=output, **recorded)
