"""`oellm logs BUNDLE JOB`: print a job's log (the latest attempt's, or `--attempt N`; every
link of a chain in order, with a header each), and with `-f` follow it while it grows,
switching to the next link's or attempt's log when one starts. Registered by `oellm.cli`.

Following stops by itself once the job's end is recorded and its log stopped growing (a run
that ended but is not recorded yet is waited for a while: the round that records it may
start the next attempt); Ctrl-C stops it quietly (exit 130).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from oellm.completion import complete_jobs
from oellm.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER
from oellm.guard import guarded
from oellm.options import BUNDLE, SCHEDULER

POLL_S = 0.5
IDLE_RECORDED_S = 2.0  # the end is recorded: stop once the log was quiet this long
IDLE_UNRECORDED_S = 30.0  # ended, not recorded yet: give a round time to start a restart
CHUNK = 1 << 16


@click.command("logs")
@BUNDLE
@click.argument("job", shell_complete=complete_jobs)
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="This attempt's log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the log grows.")
@SCHEDULER
@guarded
def logs_command(
    bundle: Path, job: str, attempt: int | None, follow: bool, scheduler: str | None
) -> int:
    """Print the log of a job's latest attempt (or --attempt N); a chain's links in order.

    \b
    -f follows it, and the next link's or attempt's when one starts, until the job's end is
    recorded and its log stopped growing (Ctrl-C stops earlier). Exit 2 when there is no
    log yet.
    """
    from oellm.reconciler.session import Session

    session = Session(bundle, scheduler, allow_edited=True)
    if job not in {j.name for j in session.bundle.jobs}:
        from oellm.reconciler.errors import ReconcileError

        raise ReconcileError(
            f"no job named {job} in this bundle", hint="`oellm status BUNDLE` lists its jobs"
        )
    follower = Follower(session, job, attempt)
    runs = follower.runs()
    if not runs:
        click.echo(follower.no_log(), err=True)
        return EXIT_USER
    if not follow:
        if not any(run.log.exists() for run in runs):
            click.echo(follower.no_log(runs[0].log), err=True)
            return EXIT_USER
        for run in runs:
            follower.header(run, len(runs))
            follower.copy(run.log)
        return EXIT_OK
    try:
        follower.follow()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


class Follower:
    def __init__(self, session: Any, job: str, attempt: int | None) -> None:
        self.session = session
        self.job = job
        self.fixed = attempt
        self.offsets: dict[Path, int] = {}
        self.attempt: int | None = None
        self.following: int | None = None  # the attempt whose runs are followed

    def history(self) -> Any:
        return self.session.history()

    def record(self) -> Any:
        attempts = self.history().attempts.get(self.job, ())
        if self.fixed is not None:
            found = [a for a in attempts if a.attempt == self.fixed]
            if not found:
                from oellm.reconciler.errors import ReconcileError

                shown = ", ".join(str(a.attempt) for a in attempts) or "none yet"
                raise ReconcileError(
                    f"{self.job} has no attempt {self.fixed}", hint=f"its attempts: {shown}"
                )
            return found[0]
        return attempts[-1] if attempts else None

    def runs(self) -> list[Any]:
        from oellm.reconciler.job_logs import runs

        record = self.record()
        if record is None:
            return []
        self.attempt = record.attempt
        return runs(self.session.bundle, self.session.bundle.job(self.job), record)

    def no_log(self, path: Path | None = None) -> str:
        where = f" ({path})" if path is not None else ""
        which = f"attempt {self.fixed}" if self.fixed else "it"
        return (
            f"error: {self.job} has no log yet{where}\n"
            f"  hint: {which} has not started; `oellm status` shows its state, "
            "`oellm logs -f` waits for it"
        )

    def header(self, run: Any, count: int) -> None:
        if count > 1 or run.link:
            click.echo(
                f"==> {self.job} attempt {run.attempt} link {run.link}: job {run.job_id} "
                f"({run.log}) <=="
            )

    def copy(self, path: Path) -> bool:
        """Print what the file gained since the last call; whether it grew."""
        start = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read(CHUNK)
        except OSError:
            return False
        if not data:
            return False
        self.offsets[path] = start + len(data)
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return True

    def follow(self) -> None:
        from oellm.reconciler.job_logs import marker_times

        shown: set[tuple[int, int]] = set()
        index, quiet_since = 0, time.monotonic()
        announced = False
        while True:
            runs = self.runs()
            if not runs:
                if not announced:
                    click.echo(f"waiting for {self.job} to start ...", err=True)
                    announced = True
                time.sleep(POLL_S)
                continue
            if self.following is not None and runs[0].attempt != self.following:
                index = 0  # a new attempt started: follow its log from its first run
            self.following = runs[0].attempt
            index = min(index, len(runs) - 1)
            run = runs[index]
            if (run.attempt, run.link) not in shown:
                shown.add((run.attempt, run.link))
                self.header(run, len(runs) if index == 0 else 2)
            if self.copy(run.log):
                quiet_since = time.monotonic()
                continue
            idle = time.monotonic() - quiet_since
            record = self.record()
            job = self.session.bundle.job(self.job)
            ended = marker_times(self.session.bundle, job, run.job_id).ended is not None
            if index + 1 < len(runs) and (ended or runs[index + 1].log.exists()):
                index += 1  # the next link of the chain started: this one is over
                continue
            recorded = record is not None and record.phase == "finished"
            if recorded and idle > IDLE_RECORDED_S:
                if self.fixed is None and self.record().attempt != run.attempt:
                    continue
                return
            if ended and idle > IDLE_UNRECORDED_S:
                return
            time.sleep(POLL_S)
