"""`oellm retry`: ask for a new attempt of jobs that ended for good (registered by `oellm.cli`).

Exit codes: 1 a retry was recorded (the next `oellm reconcile` submits it), 0 nothing to retry
(or --dry-run), 2 a name or stage that is not in the bundle, 75 another round holds the state
longer than OELLM_LOCK_WAIT_SECONDS.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from oellm.completion import complete_jobs
from oellm.guard import guarded
from oellm.options import BUNDLE, SCHEDULER


@click.command("retry")
@BUNDLE
@click.argument("jobs", nargs=-1, shell_complete=complete_jobs)
@click.option("--failed", is_flag=True, help="Only jobs that ended without success.")
@click.option("--cancelled", is_flag=True, help="Only jobs that were cancelled or dropped.")
@click.option("--stage", "stages", multiple=True, help="Only jobs of this stage (repeatable).")
@click.option("--dry-run", is_flag=True, help="List what would be retried; record nothing.")
@SCHEDULER
@guarded
def retry_command(
    bundle: Path,
    jobs: tuple[str, ...],
    failed: bool,
    cancelled: bool,
    stages: tuple[str, ...],
    dry_run: bool,
    scheduler: str | None,
) -> int:
    """Run jobs again that ended for good: failed with their restart budget spent, refused by
    sbatch, cancelled or dropped. JOBS are names or globs ('lr_*'; default: every job).

    \b
    Each gets one new attempt with fresh restart budgets, submitted by the next
    `oellm reconcile` (this command only records the request). Jobs in flight or completed
    are never retried. Exit codes: 1 recorded, 0 nothing to retry (or --dry-run),
    2 an unknown job or stage, 75 the state is busy.
    """
    from oellm.reconciler.retry_jobs import LOCK_WAIT_S, retry_jobs
    from oellm.reconciler.session import Session

    try:
        wait = float(os.environ.get("OELLM_LOCK_WAIT_SECONDS") or LOCK_WAIT_S)
    except ValueError:
        wait = LOCK_WAIT_S
    report = retry_jobs(
        Session(bundle, scheduler, allow_edited=True),
        jobs,
        click.echo,
        failed=failed,
        cancelled=cancelled,
        stages=stages,
        dry_run=dry_run,
        lock_wait=wait,
    )
    return report.exit_code
