"""The `oellm` command: a thin dispatcher. Commands return their exit code; `oellm.guard`
renders errors (the exit-code table is in `oellm.errors`).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import json
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oellm import __version__
from oellm.bundle_files import LOCK_NAME
from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_USER
from oellm.guard import guarded, protect_stdout
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

log = logging.getLogger("oellm")


def _setup_logging(verbose: bool, debug: bool) -> None:
    level_name = os.environ.get("OELLM_LOG_LEVEL", "WARNING").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.WARNING
    if verbose:
        level = logging.INFO
    if debug:
        level = logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


class _LazyGroup(click.Group):
    """Commands of their own modules are imported only when they run (or when --help lists
    them), so that `oellm --version` or `oellm compile` loads no other command's code."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


# Commands that live in their own modules.
_LAZY = {
    "diff": "oellm.diff_cli:diff_command",
    "container": "oellm.container_cli:container_command",
    "reconcile": "oellm.reconcile_cli:reconcile_command",
    "status": "oellm.status_cli:status_command",
    "cancel": "oellm.cancel_cli:cancel_command",
    "retry": "oellm.retry_cli:retry_command",
    "logs": "oellm.logs_cli:logs_command",
    "prepare": "oellm.prepare_cli:prepare_command",
    "schema": "oellm.authoring_cli:schema_command",
    "config": "oellm.authoring_cli:config_command",
    "check": "oellm.check_cli:check_command",
    "report": "oellm.report_cli:report_command",
    "megatron-args": "oellm.megatron_args_cli:megatron_args_command",
}


@click.group(cls=_LazyGroup, lazy=_LAZY, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="oellm")
@click.option("-v", "--verbose", is_flag=True, help="Log progress (INFO).")
@click.option("--debug", is_flag=True, help="Log everything (DEBUG).")
def cli(verbose: bool, debug: bool) -> None:
    """Compile LLM training sweeps into SLURM bundles, and reconcile them from cron.

    \b
    Quick start:
      oellm compile config/experiments/demo.yaml -o bundle/
    Logging: OELLM_LOG_LEVEL=DEBUG|INFO|WARNING, or --verbose / --debug.
    """
    _setup_logging(verbose, debug)


def _complete_compile_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[Any]:
    from oellm.completion import complete_compile_args

    return complete_compile_args(ctx, param, incomplete)


# Whether this process is a command run from the shell (`main()` without arguments), not a
# caller of `main` that keeps its process: only the first may leave handlers changed.
_FROM_SHELL = False


def from_shell() -> bool:
    """Whether this process is `oellm` run from the shell (`main()` on the command line, not
    called with arguments by a program or a test): a stop then holds until it ends."""
    return _FROM_SHELL


def terminable_command() -> None:
    """For the rest of the command, SIGTERM and SIGHUP (cron's `timeout`, a closed terminal)
    stop it as Ctrl-C does: it unwinds, releasing the state lock (exit 143 or 129), rather
    than die holding it (others then wait for its lease, on another login node 15 min).
    Stopped at any point, what it did is recorded as a kill would leave it."""
    click.get_current_context().with_resource(terminable(leave_ignored=from_shell()))


@cli.command("compile")
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
    from oellm.compiler.write import stage, write_bundle
    from oellm.reconciler.identity import apply_state_change

    # Each file goes to the staging folder as it is compiled: a large sweep is never held in
    # memory; the folder replaces the bundle once complete (or is removed on an error, and
    # when the compile is stopped: Ctrl-C, `kill`, the terminal closed).
    with terminable(leave_ignored=_FROM_SHELL), stage(output) as files:
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
    bundle = compile_bundle(request, _Progress(), files=checked)
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

    bundle = compile_bundle(request, _Progress(), files=files)
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


class _Progress:
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


@cli.command("plan")
@click.argument("args", nargs=-1, metavar="EXPERIMENT.yaml|BUNDLE [OVERRIDES]...")
@config_source_options(
    "Plan an experiment of the library.", "Extra config library folder (repeatable)."
)
@click.option(
    "--max-jobs-per-stage",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Jobs listed in each stage box.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="Text boxes, or a graph of stages and jobs to draw.",
)
@guarded
def plan_command(
    args: tuple[str, ...],
    config_ref: str | None,
    config_dirs: tuple[Path, ...],
    max_jobs_per_stage: int,
    fmt: str,
) -> int:
    """Show the plan of an experiment (compiled in memory) or of a compiled bundle.

    \b
    oellm plan exp.yaml backend.megatron.lr=1e-4
    oellm plan bundle/ --format dot | dot -Tpng > plan.png
    oellm plan bundle/ --format mermaid
    """
    from oellm.compiler.pipeline import compile_bundle
    from oellm.compiler.plan import plan_dot, plan_mermaid, plan_text
    from oellm.lockfile.codec import loads

    if args and config_ref is None and Path(args[0]).is_dir():
        if len(args) > 1:
            raise click.UsageError("overrides apply to experiments, not to a compiled bundle")
        lock_path = Path(args[0]) / LOCK_NAME
        if not lock_path.is_file():
            raise click.UsageError(f"'{args[0]}' holds no {LOCK_NAME}")
        lock = loads(lock_path.read_bytes(), str(lock_path))
        folder = Path(args[0])

        def script(path: str) -> str:
            return (folder / path).read_text(encoding="utf-8")
    else:
        compiled = compile_bundle(compile_request(args, config_ref, config_dirs), _Progress())
        lock = compiled.lock

        def script(path: str) -> str:
            return compiled.files[path].decode("utf-8")

    if fmt == "dot":
        click.echo(plan_dot(lock), nl=False)
    elif fmt == "mermaid":
        click.echo(plan_mermaid(lock), nl=False)
    else:
        from oellm.resources import totals

        click.echo(plan_text(lock, max_jobs_per_stage), nl=False)
        click.echo(totals(lock, script).line())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    global _FROM_SHELL
    _FROM_SHELL = argv is None
    protect_stdout()
    _freeze_imports()
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="oellm", standalone_mode=True
        )
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USER)
    return EXIT_OK


@functools.cache
def _freeze_imports() -> None:
    """Move what exists before a command runs (modules, classes, click's commands), which
    lives as long as the process, out of the garbage collector's sight, once a process: its
    passes, which the many objects of a large sweep or round set off, then do not walk them
    each time (a round over 10,000 array tasks: 83 ms of collections, 51 ms frozen)."""
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
