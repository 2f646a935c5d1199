"""The `oellm` command: a thin dispatcher that renders errors and owns the exit codes.

Exit codes: 0 ok; 1 ran fine and found a difference; 2 user error (bad config or usage);
3 internal error (a bug: the traceback goes to a log file, not the terminal).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from oellm import __version__
from oellm.compiler.errors import ConfigError
from oellm.reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from oellm.compiler.pipeline import CompileRequest

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3

log = logging.getLogger("oellm")
F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(verbose: bool, debug: bool) -> None:
    level_name = os.environ.get("OELLM_LOG_LEVEL", "WARNING").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.WARNING
    if verbose:
        level = logging.INFO
    if debug:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def _fail_user(error: ConfigError) -> NoReturn:
    for problem in error.problems:
        click.echo(
            f"error: {problem.render()}" if not problem.origin else problem.render(), err=True
        )
    sys.exit(EXIT_USER_ERROR)


def _fail_internal(exc: BaseException) -> NoReturn:
    fd, name = tempfile.mkstemp(prefix="oellm-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"oellm {__version__}\nargv: {sys.argv!r}\n\n")
        handle.write("".join(traceback.format_exception(exc)))
    click.echo(
        f"internal error: {type(exc).__name__}: {exc}\n"
        f"  this is a bug in oellm; the traceback is in {name}",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)


def guarded(func: F) -> F:
    """Turn user errors into exit 2 and anything unexpected into exit 3 with a crash log."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as error:
            _fail_user(error)
        except ReconcileError as error:
            click.echo(f"error: {error.render()}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            _fail_internal(exc)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _split_positionals(
    args: Sequence[str], config_ref: str | None
) -> tuple[Path | None, list[str]]:
    """The first positional is the experiment file unless it looks like an override."""
    if args and config_ref is None and not _looks_like_override(args[0]):
        return Path(args[0]), list(args[1:])
    return None, list(args)


def _looks_like_override(text: str) -> bool:
    return "=" in text or text.startswith("~")


@cli.command("compile")
@click.argument("args", nargs=-1, metavar="[EXPERIMENT.yaml] [OVERRIDES]...")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="Bundle folder to write (replaced atomically when complete).",
)
@click.option(
    "--config-ref",
    metavar="experiments/NAME",
    help="Take the experiment from the config dirs instead of a file.",
)
@click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Extra config library folder, searched before the built-in one (repeatable).",
)
@click.option(
    "--moved",
    "moved",
    multiple=True,
    metavar="OLD=NEW",
    help="A job renamed since the last compile keeps its history (repeatable; or `moved:` in "
    "the config).",
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
    check: bool,
) -> None:
    """Compile an experiment into a bundle of sbatch scripts and a plan lockfile.

    \b
    OVERRIDES change the composed config:
      backend.megatron.lr=1e-4   set an existing key
      +new.key=1                 add a key
      ++any.key=1                add or set
      ~drop.key                  delete a key
      slurm=leonardo             choose a config group option
    """
    import dataclasses

    from oellm.compiler.pipeline import compile_bundle
    from oellm.compiler.write import write_bundle

    pairs = {}
    for item in moved:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise click.UsageError(f"--moved {item!r}: write OLD=NEW")
        pairs[old] = new
    request = dataclasses.replace(_request(args, config_ref, config_dirs), moved=pairs)
    bundle = compile_bundle(request, _Progress())
    if check:
        from oellm.diff_cli import check_bundle

        same, text = check_bundle(bundle, output)
        if not same:
            click.echo(text, nl=not text.endswith("\n"))
            sys.exit(EXIT_DIFFERENT)
        click.echo(f"{output} is up to date")
        return
    write_bundle(bundle, output)
    jobs = len(bundle.lock["jobs"])
    click.echo(
        f"wrote {output}: {jobs} job{'s' if jobs != 1 else ''}, "
        f"bundle {bundle.lock['bundle_id'][:12]}"
    )


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


def _request(
    args: Sequence[str], config_ref: str | None, config_dirs: Sequence[Path]
) -> CompileRequest:
    from oellm.compiler.pipeline import CompileRequest

    experiment, overrides = _split_positionals(args, config_ref)
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


@cli.command("plan")
@click.argument("args", nargs=-1, metavar="EXPERIMENT.yaml|BUNDLE [OVERRIDES]...")
@click.option("--config-ref", metavar="experiments/NAME", help="Plan an experiment of the library.")
@click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Extra config library folder (repeatable).",
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
) -> None:
    """Show the plan of an experiment (compiled in memory) or of a compiled bundle.

    \b
    oellm plan exp.yaml backend.megatron.lr=1e-4
    oellm plan bundle/ --format dot | dot -Tpng > plan.png
    oellm plan bundle/ --format mermaid
    """
    from oellm.compiler.pipeline import compile_bundle
    from oellm.compiler.plan import plan_dot, plan_mermaid, plan_text

    if args and config_ref is None and Path(args[0]).is_dir():
        if len(args) > 1:
            raise click.UsageError("overrides apply to experiments, not to a compiled bundle")
        lock_path = Path(args[0]) / "plan.lock.json"
        if not lock_path.is_file():
            raise click.UsageError(f"'{args[0]}' holds no plan.lock.json")
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
    else:
        lock = compile_bundle(_request(args, config_ref, config_dirs), _Progress()).lock
    if fmt == "dot":
        click.echo(plan_dot(lock), nl=False)
    elif fmt == "mermaid":
        click.echo(plan_mermaid(lock), nl=False)
    else:
        click.echo(plan_text(lock, max_jobs_per_stage), nl=False)


_BUNDLE = click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
_SCHEDULER = click.option(
    "--scheduler",
    type=click.Choice(["slurm", "local"]),
    default=None,
    help="Where jobs run: SLURM, or detached processes on this machine "
    "(default: slurm when sbatch is installed, else local).",
)


@cli.command("reconcile")
@_BUNDLE
@click.option("--dry-run", is_flag=True, help="Print what would be done, and why, without acting.")
@click.option("--wait", is_flag=True, help="Repeat until every job has finished.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between rounds with --wait (default: 30 on SLURM, 2 locally).",
)
@click.option(
    "--restart-changed",
    is_flag=True,
    help="Restart running jobs whose script changed now (default: they keep running and the "
    "next attempt uses the new script; queued ones are always resubmitted).",
)
@click.option("--prune", is_flag=True, help="Cancel running jobs that are no longer in the bundle.")
@click.option(
    "--allow-edited",
    is_flag=True,
    help="Run scripts edited by hand after compile (their hash differs from the lock).",
)
@_SCHEDULER
@guarded
def reconcile_command(
    bundle: Path,
    dry_run: bool,
    wait: bool,
    interval: float | None,
    restart_changed: bool,
    prune: bool,
    allow_edited: bool,
    scheduler: str | None,
) -> None:
    """Make the scheduler match the bundle: submit what is ready, cancel what must stop,
    record what finished. Stateless and safe to run from cron, or twice at once.

    \b
    Exit codes: 0 nothing to do, 1 acted (or a submission failed),
    75 the scheduler was unreachable (nothing destructive done; retry later),
    2 a problem with the bundle or its state. With --wait: 0 when every job
    completed, 1 when some failed or were cancelled.
    Crontab:  */5 * * * *  cd /path/to/experiments && oellm reconcile bundle/
    """
    import time

    from oellm.reconciler.decide import Options
    from oellm.reconciler.lock import Busy, StateLock
    from oellm.reconciler.reconcile import EXIT_QUIET, Session, intent_grace, reconcile_once

    options = Options(intent_grace(), restart_changed=restart_changed, prune=prune)
    session = Session(bundle, scheduler, options, allow_edited=allow_edited)
    if interval is None:
        interval = 2.0 if session.scheduler.name == "local" else 30.0

    def say(line: str) -> None:
        click.echo(line)

    if not wait:
        report = reconcile_once(session, dry_run, say)
        if report.busy:
            click.echo(report.busy)
        for error in report.outcome.errors if report.outcome else []:
            click.echo(f"error: {error}", err=True)
        if not report.observation.available:
            click.echo(f"scheduler unavailable: {report.observation.error}", err=True)
        sys.exit(report.exit_code)
    lock = StateLock(session.bundle.state_path)
    try:
        lock.acquire()
    except Busy as busy:
        click.echo(str(busy))
        sys.exit(EXIT_QUIET)
    try:
        while True:
            report = reconcile_once(session, dry_run, say, lock=lock)
            for error in report.outcome.errors if report.outcome else []:
                click.echo(f"error: {error}", err=True)
            if report.finished() or dry_run:
                break
            time.sleep(interval)
            lock.refresh()
    finally:
        lock.release()
    failed = [
        a.job
        for a in report.actions
        if a.kind not in ("event", "state") and a.reason != "completed"
    ]
    if failed:
        click.echo(f"finished; not completed: {', '.join(failed)}")
    sys.exit(1 if failed else 0)


@cli.command("status")
@_BUNDLE
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_SCHEDULER
@guarded
def status_command(bundle: Path, job: str | None, as_json: bool, scheduler: str | None) -> None:
    """Show every job of a bundle (stage, state, attempt, scheduler id, why), or with JOB
    that job's attempt ledger: each attempt's cause, outcome, events and actions."""
    import dataclasses

    from oellm.reconciler.reconcile import Session, status

    session = Session(bundle, scheduler, allow_edited=True)
    if job is not None:
        _show_ledger(session, job, as_json)
        return
    rows, obs = status(session)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        return
    table = [("JOB", "STAGE", "STATE", "ATTEMPT", "ID", "REASON", "LAST EVENT")]
    for r in rows:
        table.append(
            (
                r.job,
                r.stage or "-",
                r.state,
                str(r.attempt or "-"),
                r.job_id or "-",
                r.reason,
                r.last_event or "-",
            )
        )
    _print_table(table)
    if not obs.available:
        click.echo(
            f"(scheduler unavailable: states marked ? are the last known ones: {obs.error})",
            err=True,
        )


def _print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _show_ledger(session: Any, job: str, as_json: bool) -> None:
    import dataclasses

    from oellm.reconciler.errors import ReconcileError as _Missing

    if job not in {j.name for j in session.bundle.jobs}:
        raise _Missing(f"no job named {job} in this bundle")
    history = session.history()
    attempts = [dataclasses.asdict(a) for a in history.attempts.get(job, ())]
    dropped = history.dropped.get(job)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job": job,
                    "attempts": attempts,
                    "dropped": dataclasses.asdict(dropped) if dropped else None,
                },
                indent=1,
            )
        )
        return
    table = [("ATTEMPT", "ID", "STATE", "EXIT", "ITERATION", "STARTED", "ENDED", "CAUSE")]
    for a in attempts:
        table.append(
            (
                str(a["attempt"]),
                a["job_id"] or "-",
                a["final_state"] or a["phase"],
                "-" if a["exit_code"] is None else str(a["exit_code"]),
                "-" if a["iteration"] is None else str(a["iteration"]),
                a["submitted_at"] or "-",
                a["ended_at"] or "-",
                a["cause"],
            )
        )
    _print_table(table)
    for a in attempts:
        for event in a["events"]:
            click.echo(
                f"  attempt {a['attempt']}: {event['event']} at {event.get('at', '?')}: "
                f"{event.get('line') or event.get('trigger')} -> "
                f"{', '.join(event.get('done', []))}"
            )
        for link in a.get("links", ()):
            after = f" after {link['after']}" if link.get("after") else ""
            click.echo(
                f"  attempt {a['attempt']} link {link['link']}: job "
                f"{link.get('job_id') or '-'} {link.get('state') or link.get('phase')}{after}"
            )
        for word in ("restart_requested", "cancel_requested", "finish_requested"):
            if a[word]:
                click.echo(f"  attempt {a['attempt']}: {word.replace('_', ' ')}: {a[word]}")
    if dropped:
        click.echo(f"  dropped at {dropped.at}: {dropped.reason}")


@cli.command("cancel")
@_BUNDLE
@click.argument("jobs", nargs=-1)
@_SCHEDULER
@guarded
def cancel_command(bundle: Path, jobs: tuple[str, ...], scheduler: str | None) -> None:
    """Cancel jobs of a bundle (all of them when none are named); they are not resubmitted."""
    from oellm.reconciler.reconcile import Session, cancel_jobs

    sys.exit(cancel_jobs(Session(bundle, scheduler), jobs, click.echo))


def _register() -> None:
    from oellm.container_cli import container_command
    from oellm.diff_cli import diff_command

    cli.add_command(diff_command)
    cli.add_command(container_command)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="oellm", standalone_mode=True
        )
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USER_ERROR)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
