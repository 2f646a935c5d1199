"""`oellm reconcile`: one round (`reconcile_once`) or, with --wait, rounds under one state lock
until every job has settled, and what each prints; registered by `oellm.cli`.

Exit codes of `reconcile`: 0 nothing to do, 1 acted, 2 a problem with the bundle or its state,
75 SLURM unreachable; with --wait, 0 when every job completed and 1 otherwise.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_USER
from oellm.guard import guarded
from oellm.options import BUNDLE, SCHEDULER


@click.command("reconcile")
@BUNDLE
@click.option("--dry-run", is_flag=True, help="Print what would be done, and why, without acting.")
@click.option(
    "--actions-only",
    is_flag=True,
    help="With --dry-run: only the jobs that would get an action, then their count.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The round's actions as JSON (schema_version 1, schemas/reconcile.schema.json).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Repeat until every job has finished; one time-stamped line per round that changed "
    "something.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=24 * 3600),
    callback=lambda ctx, param, value: _a_number(value),
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
@click.option(
    "--claim-state",
    is_flag=True,
    help="This bundle takes over a state dir that another bundle folder used (the same "
    "experiment, moved or checked out again).",
)
@click.option(
    "--sync-wandb",
    is_flag=True,
    help="After each round, upload the W&B offline runs of the bundle's jobs that have new "
    "data (`wandb sync`; only where the wandb command is installed).",
)
@click.option(
    "--max-submit",
    type=click.IntRange(min=0),
    default=None,
    envvar="OELLM_MAX_SUBMIT",
    metavar="N",
    show_envvar=True,
    help="Submit at most N SLURM jobs per round (an array task and a chain link count one "
    "each); the rest of the ready jobs go in later rounds, in plan order. Default: the site's "
    "slurm.limits.max_jobs minus the jobs you have queued or running; 0: no limit.",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0),
    default=None,
    envvar="OELLM_TIME_BUDGET_SECONDS",
    metavar="SECONDS",
    show_envvar=True,
    help="Start no new submission once a round has run this many seconds (default 60, so a "
    "round fits a cron interval; 0: no limit). The first submission always goes.",
)
@SCHEDULER
@guarded
def reconcile_command(
    bundle: Path,
    dry_run: bool,
    actions_only: bool,
    as_json: bool,
    wait: bool,
    interval: float | None,
    restart_changed: bool,
    prune: bool,
    allow_edited: bool,
    claim_state: bool,
    sync_wandb: bool,
    max_submit: int | None,
    time_budget: float | None,
    scheduler: str | None,
) -> int:
    """Make the scheduler match the bundle: submit what is ready, cancel what must stop,
    record what finished. Stateless and safe to run from cron, or twice at once.

    \b
    Exit codes: 0 nothing to do, 1 acted (or a submission failed),
    75 the scheduler was unreachable, or the state lock's lease could not be
    renewed (nothing destructive done; retry later), 2 a problem with the
    bundle or its state, 143 or 129 stopped by SIGTERM or SIGHUP (the lock
    released). With --wait: 0 when every job completed, 1 when some failed
    or were cancelled.
    Crontab:  */5 * * * *  cd /path/to/experiments && oellm reconcile bundle/

    \b
    A round submits within a count budget (--max-submit) and a time budget
    (--time-budget): ready jobs past either wait, unrecorded, for the next
    round, earlier stages first and in lockfile order within a stage; the
    round says how many went. With --wait the next round goes on with them.
    """
    from oellm.cli import terminable_command

    _fewer_collections(wait)
    terminable_command()
    from oellm.reconciler.budget import budget as make_budget
    from oellm.reconciler.decide_job import Options
    from oellm.reconciler.session import Session, intent_grace

    options = Options(intent_grace(), restart_changed=restart_changed, prune=prune)
    # `early`: the round's sacct starts before the bundle is read (reconciler/prefetch.py).
    session = Session(
        bundle, scheduler, options, allow_edited=allow_edited, claim_state=claim_state, early=True
    )
    click.get_current_context().call_on_close(session.close)
    if interval is None:
        interval = 2.0 if session.scheduler.name == "local" else 30.0

    if actions_only and not dry_run:
        raise click.UsageError("--actions-only goes with --dry-run")
    lines: list[str] = []

    def say(line: str) -> None:
        if wait or as_json or actions_only:
            lines.append(line)  # --wait prints them under its round line
        else:
            click.echo(line)

    def after(held: bool) -> None:
        # W&B offline runs (reconciler/wandb_sync): problems are warnings, never the exit code.
        if sync_wandb and not dry_run:
            from oellm.reconciler.wandb_sync import sync_round

            sync_round(session, say, lambda line: click.echo(line, err=True), held)

    limits = make_budget(max_submit, time_budget)
    if not wait:
        return _one_round(session, dry_run, as_json, actions_only, say, after, lines, limits)
    return _wait(session, dry_run, interval, say, after, lines, limits)


# A round keeps what it allocates (the lockfile's jobs, the records, SLURM's rows) to its
# end: the garbage collector's passes, which the allocations of 10,000 jobs set off hundreds
# of times, find nothing to free. One round runs without them; `--wait`, which runs for
# hours, with rarer ones.
ROUND_GC_THRESHOLD = (100_000, 50, 100)


def _fewer_collections(wait: bool) -> None:
    """No collections during one round, rarer ones with `--wait`; as before when it ends."""
    context = click.get_current_context()
    if not wait:
        if gc.isenabled():
            gc.disable()
            context.call_on_close(gc.enable)
        return
    before = gc.get_threshold()
    if before[0] < ROUND_GC_THRESHOLD[0]:
        gc.set_threshold(*ROUND_GC_THRESHOLD)
        context.call_on_close(lambda: gc.set_threshold(*before))


def _one_round(
    session: Any,
    dry_run: bool,
    as_json: bool,
    actions_only: bool,
    say: Callable[[str], None],
    after: Callable[[bool], None],
    lines: list[str],
    limits: Any,
) -> int:
    from oellm.reconciler.reconcile import reconcile_once

    report = reconcile_once(session, dry_run, say, budget=limits)
    if as_json:
        from oellm.reconcile_json import document

        click.echo(json.dumps(document(session, report, dry_run, lines), indent=1))
    elif actions_only:
        _actions_only(session, report.actions)
    if report.busy:
        click.echo(report.busy, err=as_json)
    elif report.stopped:
        click.echo(f"error: {report.stopped}", err=True)
    else:
        after(False)
    _errors(report)
    if not report.observation.available:
        click.echo(f"scheduler unavailable: {report.observation.error}", err=True)
    return int(report.exit_code)


def _wait(
    session: Any,
    dry_run: bool,
    interval: float,
    say: Callable[[str], None],
    after: Callable[[bool], None],
    lines: list[str],
    limits: Any,
) -> int:
    """`--wait`: rounds under one lock until every job has settled, a line per busy round."""

    from oellm.errors import EXIT_TEMPFAIL
    from oellm.reconcile_progress import Progress
    from oellm.reconciler.lock import Busy, LockLost, RenewFailed, StateLock
    from oellm.reconciler.reconcile import EXIT_QUIET, reconcile_once

    lock = StateLock(session.bundle.state_path)
    try:
        lock.acquire()
    except Busy as busy:
        click.echo(str(busy))
        return EXIT_QUIET
    progress = Progress(session)
    try:
        while True:
            lines.clear()
            report = reconcile_once(session, dry_run, say, lock=lock, budget=limits)
            progress.round(report, lines)
            _errors(report)
            if report.damaged:
                return EXIT_USER
            if report.busy:
                click.echo(report.busy)
                return EXIT_QUIET
            if report.stopped:
                click.echo(f"error: {report.stopped}", err=True)
                return EXIT_TEMPFAIL
            after(True)
            if report.finished() or dry_run:
                break
            try:
                _sleep_holding(lock, interval)
            except RenewFailed:
                raise  # the state dir refused: exit 75, for cron to retry
            except LockLost as lost:  # as when a round finds it: another round holds it
                click.echo(str(lost))
                return EXIT_QUIET
    finally:
        lock.release()
    failed = report.not_completed()
    progress.done()
    if failed:
        click.echo(f"finished; not completed: {', '.join(failed)}")
    return EXIT_DIFFERENT if failed else EXIT_OK


def _a_number(seconds: float | None) -> float | None:
    if seconds is not None and math.isnan(seconds):
        raise click.BadParameter("give a number of seconds, e.g. 30")
    return seconds


def _sleep_holding(lock: Any, seconds: float) -> None:
    """Sleep between rounds of `--wait`, checking the lock every third of its lease, which
    renews the lease once less than half of it is left: it never runs out, an interval
    longer than the lease included (a lock past its lease is not renewed)."""
    import time

    end = time.monotonic() + seconds
    while True:
        lock.verify()
        left = end - time.monotonic()
        if not left > 0:
            return
        time.sleep(min(left, lock.lease / 3))


def _actions_only(session: Any, actions: Sequence[Any]) -> None:
    """`--dry-run --actions-only`: the jobs that would get an action, then their count."""
    from oellm.reconciler.actions import OBSERVATIONS

    names = {job.name for job in session.bundle.jobs}
    acting = [a for a in actions if a.kind != "wait" and a.kind not in OBSERVATIONS]
    for action in acting:
        job = session.bundle.job(action.job) if action.job in names else None
        click.echo(action.describe(job if session.scheduler.arrays else None))
    click.echo(f"{len(acting)} action{'s' if len(acting) != 1 else ''}")


def _errors(report: Any) -> None:
    for error in report.outcome.errors if report.outcome else []:
        click.echo(f"error: {error}", err=True)
    for damaged in report.damaged:
        click.echo(f"error: {damaged}", err=True)
