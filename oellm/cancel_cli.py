"""`oellm cancel`: cancel jobs of a bundle for good, recorded first, then sent to SLURM
(registered by `oellm.cli`).
"""

from __future__ import annotations

from pathlib import Path

import click

from oellm.completion import complete_jobs
from oellm.guard import guarded
from oellm.options import BUNDLE, SCHEDULER


@click.command("cancel")
@BUNDLE
@click.argument("jobs", nargs=-1, shell_complete=complete_jobs)
@SCHEDULER
@guarded
def cancel_command(bundle: Path, jobs: tuple[str, ...], scheduler: str | None) -> int:
    """Cancel jobs of a bundle (all of them when none are named); they are not resubmitted.

    \b
    The cancel is recorded first, then sent to SLURM; one SLURM did not take is sent again
    by every `oellm reconcile` until SLURM confirms. Exit codes: 1 cancelled (or recorded),
    0 nothing to cancel, 75 SLURM unreachable or another reconcile holds the state (waits
    up to OELLM_LOCK_WAIT_SECONDS, default 60, for it).
    """
    from oellm.cli import terminable_command
    from oellm.reconciler.cancel import cancel_jobs
    from oellm.reconciler.session import Session

    terminable_command()
    report = cancel_jobs(Session(bundle, scheduler), jobs, click.echo)
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    return report.exit_code
