"""The reconciler's commands: `reconcile`, `status` and `cancel` (registered by `oellm.cli`).

Exit codes of `reconcile`: 0 nothing to do, 1 acted, 2 a problem with the bundle or its state,
75 SLURM unreachable; with --wait, 0 when every job completed and 1 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_USER
from oellm.guard import guarded

_BUNDLE = click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
_SCHEDULER = click.option(
    "--scheduler",
    type=click.Choice(["slurm", "local"]),
    default=None,
    help="Where jobs run: SLURM, or detached processes on this machine "
    "(default: slurm when sbatch is installed, else local).",
)


@click.command("reconcile")
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
    claim_state: bool,
    sync_wandb: bool,
    scheduler: str | None,
) -> int:
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
    session = Session(
        bundle, scheduler, options, allow_edited=allow_edited, claim_state=claim_state
    )
    if interval is None:
        interval = 2.0 if session.scheduler.name == "local" else 30.0

    def say(line: str) -> None:
        click.echo(line)

    def after(held: bool) -> None:
        # W&B offline runs (reconciler/wandb_sync): problems are warnings, never the exit code.
        if sync_wandb and not dry_run:
            from oellm.reconciler.wandb_sync import sync_round

            sync_round(session, say, lambda line: click.echo(line, err=True), held)

    if not wait:
        report = reconcile_once(session, dry_run, say)
        if report.busy:
            click.echo(report.busy)
        else:
            after(held=False)
        _errors(report)
        if not report.observation.available:
            click.echo(f"scheduler unavailable: {report.observation.error}", err=True)
        return report.exit_code
    lock = StateLock(session.bundle.state_path)
    try:
        lock.acquire()
    except Busy as busy:
        click.echo(str(busy))
        return EXIT_QUIET
    try:
        while True:
            report = reconcile_once(session, dry_run, say, lock=lock)
            _errors(report)
            if report.damaged:
                return EXIT_USER
            if report.busy:
                click.echo(report.busy)
                return EXIT_QUIET
            after(held=True)
            if report.finished() or dry_run:
                break
            time.sleep(interval)
            lock.refresh()
    finally:
        lock.release()
    failed = report.not_completed()
    if failed:
        click.echo(f"finished; not completed: {', '.join(failed)}")
    return EXIT_DIFFERENT if failed else EXIT_OK


def _errors(report: Any) -> None:
    for error in report.outcome.errors if report.outcome else []:
        click.echo(f"error: {error}", err=True)
    for damaged in report.damaged:
        click.echo(f"error: {damaged}", err=True)


@click.command("status")
@_BUNDLE
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_SCHEDULER
@guarded
def status_command(bundle: Path, job: str | None, as_json: bool, scheduler: str | None) -> int:
    """Show every job of a bundle (stage, state, attempt, scheduler id, why), or with JOB
    that job's attempt ledger: each attempt's cause, outcome, events and actions."""
    import dataclasses

    from oellm.reconciler.metrics_store import latest_metrics
    from oellm.reconciler.reconcile import Session, status

    session = Session(bundle, scheduler, allow_edited=True)
    if job is not None:
        _show_ledger(session, job, as_json)
        return EXIT_OK
    rows, obs = status(session)
    # Training progress of Megatron jobs, as the last round read it from their logs.
    progress = {r.job: latest_metrics(session.records, r.job, r.attempt) for r in rows}
    if as_json:
        click.echo(
            json.dumps(
                [
                    {**dataclasses.asdict(r), "metrics": _metrics_json(progress[r.job])}
                    for r in rows
                ],
                indent=1,
            )
        )
        return EXIT_OK
    table = [("JOB", "STAGE", "STATE", "ATTEMPT", "ID", "PROGRESS", "REASON", "LAST EVENT")]
    for r in rows:
        found = progress[r.job]
        table.append(
            (
                r.job,
                r.stage or "-",
                r.state,
                str(r.attempt or "-"),
                r.job_id or "-",
                found.summary() if found else "-",
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
    return EXIT_OK


def _metrics_json(found: Any) -> dict[str, Any] | None:
    import dataclasses

    if found is None:
        return None
    data = dataclasses.asdict(found)
    for key in ("offsets", "seq_length", "stride", "points", "last_point"):
        data.pop(key)
    return data


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
    from oellm.reconciler.metrics_store import latest_metrics

    history = session.history()
    attempts = [dataclasses.asdict(a) for a in history.attempts.get(job, ())]
    # Each attempt's last logged iteration and loss (Megatron jobs).
    logged = {a["attempt"]: latest_metrics(session.records, job, a["attempt"]) for a in attempts}
    dropped = history.dropped.get(job)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job": job,
                    "attempts": [
                        {**a, "metrics": _metrics_json(logged[a["attempt"]])} for a in attempts
                    ],
                    "dropped": dataclasses.asdict(dropped) if dropped else None,
                },
                indent=1,
            )
        )
        return
    table = [
        ("ATTEMPT", "ID", "STATE", "EXIT", "ITERATION", "LAST LOGGED", "STARTED", "ENDED", "CAUSE")
    ]
    for a in attempts:
        found = logged[a["attempt"]]
        table.append(
            (
                str(a["attempt"]),
                a["job_id"] or "-",
                a["final_state"] or a["phase"],
                "-" if a["exit_code"] is None else str(a["exit_code"]),
                "-" if a["iteration"] is None else str(a["iteration"]),
                found.summary() if found else "-",
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


@click.command("cancel")
@_BUNDLE
@click.argument("jobs", nargs=-1)
@_SCHEDULER
@guarded
def cancel_command(bundle: Path, jobs: tuple[str, ...], scheduler: str | None) -> int:
    """Cancel jobs of a bundle (all of them when none are named); they are not resubmitted.

    \b
    The cancel is recorded first, then sent to SLURM; one SLURM did not take is sent again
    by every `oellm reconcile` until SLURM confirms. Exit codes: 1 cancelled (or recorded),
    0 nothing to cancel, 75 SLURM unreachable or another reconcile holds the state (waits
    up to OELLM_LOCK_WAIT_SECONDS, default 60, for it).
    """
    from oellm.reconciler.reconcile import Session, cancel_jobs

    report = cancel_jobs(Session(bundle, scheduler), jobs, click.echo)
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    return report.exit_code
