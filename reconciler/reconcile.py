"""One reconcile run, and the read-only status view: lock, load, observe, decide, act, report.

Exit codes of a run: 0 nothing needed doing, 1 something was done (or failed to be), 75 the
scheduler could not be reached (nothing destructive happened; cron retries next time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_TEMPFAIL, EXIT_USER

from . import prefetch
from .act import act
from .actions import Action, MainAction, Observed, Wait, main_action
from .budget import NO_LIMIT, Budget, Held, count_limit, within_count
from .budget import summary as budget_summary
from .current import current
from .identity import claim
from .lock import Busy, LockLost, RenewFailed, StateLock
from .metrics_store import track as after_round_metrics
from .model import Current, History, Observation
from .moves import moved
from .observe import accounting_since
from .retry import pending
from .schedulers import FINISHED, slurm
from .session import Session, utcnow
from .submit import RoundOutcome

EXIT_QUIET = EXIT_OK
EXIT_ACTED = EXIT_DIFFERENT
EXIT_DAMAGED = EXIT_USER
EXIT_UNAVAILABLE = EXIT_TEMPFAIL

log = logging.getLogger("oellm.reconcile")


@dataclass(frozen=True)
class RunReport:
    actions: list[Action]
    observation: Observation
    outcome: RoundOutcome | None
    busy: str | None = None
    damaged: tuple[str, ...] = ()  # records that could not be read: their jobs were left alone
    stopped: str | None = None  # the round stopped: its lease on the state lock could not renew

    @property
    def exit_code(self) -> int:
        if self.busy:
            return EXIT_QUIET
        if self.stopped:
            return EXIT_UNAVAILABLE
        if not self.observation.available or (self.outcome and self.outcome.unavailable):
            return EXIT_UNAVAILABLE
        if self.damaged:
            return EXIT_DAMAGED
        if self.outcome and (self.outcome.acted or self.outcome.errors):
            return EXIT_ACTED
        return EXIT_QUIET

    def _mains(self) -> list[MainAction]:
        by_job: dict[str, list[Action]] = {}
        for action in self.actions:
            by_job.setdefault(action.job, []).append(action)
        return [main_action(group) for group in by_job.values()]

    def finished(self) -> bool:
        """Every job is settled: completed, or failed/cancelled/dropped for good."""
        return all(isinstance(a, Wait) and a.settled for a in self._mains())

    def not_completed(self) -> list[str]:
        """The jobs whose decided outcome is not `completed`."""
        return [
            a.job for a in self._mains() if not (isinstance(a, Wait) and a.outcome == "completed")
        ]


def settle(
    session: Session, history: History, actions: Sequence[Action], lock: StateLock | None
) -> list[str]:
    """Move the records of jobs that completed in an earlier round (this round read them and
    decided nothing is left to do) to the completed folder, which later rounds list but do
    not read (`Records.settle`). Only a finished, successful latest attempt settles a job; a
    job with a drop, a damaged record or a retry still to act on does not."""
    jobs = [
        a.job
        for a in actions
        if isinstance(a, Wait) and a.outcome == "completed" and _settles(a.job, history)
    ]
    if not jobs:
        return []
    return session.records.settle(jobs, lock.verify if lock is not None else None)


def _settles(job: str, history: History) -> bool:
    if history.settled(job) or job in history.dropped or job in history.damaged:
        return False
    if pending(history, job) is not None:
        return False
    latest = history.latest(job)
    # Plainly COMPLETED (not ended by a finish event in another state): what every reader of
    # its records, `decide.SETTLED` included, calls it.
    return (
        latest is not None
        and latest.succeeded
        and latest.final_state == "COMPLETED"
        and not latest.finish_requested
    )


def after_round(session: Session, history: History, obs: Observation) -> None:
    """Steps that follow a round's actions and only describe (training metrics): their
    problems are logged as warnings and change neither the round nor its exit code."""
    for problem in after_round_metrics(session.bundle, history, obs, session.records):
        log.warning("%s", problem)


def reconcile_once(
    session: Session,
    dry_run: bool,
    say: Callable[[str], None],
    lock: StateLock | None = None,
    budget: Budget = NO_LIMIT,
) -> RunReport:
    started = time.monotonic()
    own_lock = lock is None and not dry_run
    if own_lock:
        lock = StateLock(session.bundle.state_path)
        try:
            lock.acquire()
        except Busy as busy:
            return RunReport([], Observation(asked=False, available=True), None, busy=str(busy))
    try:
        scheduler = session.scheduler
        if (
            not dry_run
            and isinstance(scheduler, slurm.SlurmScheduler)
            and prefetch.read_since(session.bundle.state_path) is not None
        ):
            # The state lock is held, and the last round had attempts in flight (a round
            # with none asks SLURM nothing): squeue answers while the records are read.
            scheduler.prefetch_queue()
        if not dry_run:
            claim(
                session.bundle.path, session.bundle.project, session.key, session.records.state_dir
            )
            session.apply_moves(say)
        # A dry run shows every job's decision in full; a round reads what it acts on.
        history = session.history(read_completed=dry_run)
        if dry_run:  # the moves the real round makes first, in memory only (moves.py)
            history = moved(history, session.bundle.moved, say)
        obs, actions = session.checked(history, *session.look(history))
        if not dry_run and isinstance(session.scheduler, slurm.SlurmScheduler):
            # What the next round's sacct asks first, so that it can start it early.
            since = accounting_since(history.in_flight(), None)
            prefetch.remember_since(session.bundle.state_path, since)
        limit = count_limit(budget, session.bundle.max_jobs, _queued(session, obs))
        actions, held = within_count(actions, session.bundle.jobs, limit)
        damaged = tuple(history.damaged.values())
        if dry_run:
            names = {job.name for job in session.bundle.jobs}
            for action in actions:
                job = session.bundle.job(action.job) if action.job in names else None
                say(action.describe(job if session.scheduler.arrays else None))
            _say_budget(held, [], budget, say)
            return RunReport(actions, obs, None, damaged=damaged)
        seconds = budget.seconds
        try:
            outcome = act(
                actions,
                session.bundle,
                history,
                session.records,
                session.scheduler,
                session.key,
                utcnow,
                say,
                obs,
                fence=lock.verify if lock is not None else None,
                out_of_time=lambda: seconds is not None and time.monotonic() - started >= seconds,
            )
        except RenewFailed as failed:
            # The state dir refused the lease's renewal: stop, and let cron retry (exit 75).
            return RunReport(actions, obs, None, damaged=damaged, stopped=str(failed))
        except LockLost as lost:
            # Another round holds the state now: it reads what this one recorded.
            return RunReport(actions, obs, None, busy=str(lost), damaged=damaged)
        _say_budget(held, outcome.deferred, budget, say)
        try:
            settle(session, history, actions, lock)
        except RenewFailed as failed:  # (a LockLost: caught first)
            return RunReport(actions, obs, outcome, damaged=damaged, stopped=str(failed))
        except LockLost as lost:
            return RunReport(actions, obs, outcome, busy=str(lost), damaged=damaged)
        except OSError as exc:
            # Housekeeping: the job stays where it is, and is read as before.
            log.warning("completed jobs not moved to %s: %s", session.records.completed_dir, exc)
        # Training metrics (metrics_store): after acting; a problem there is only logged.
        after_round(session, history, obs)
        return RunReport(actions, obs, outcome, damaged=damaged)
    finally:
        if own_lock and lock is not None:
            lock.release()


def _queued(session: Session, obs: Observation) -> int:
    """The user's jobs queued or running, as the site's submit limit counts them: all of
    them where the scheduler says (SLURM's squeue --me), else this bundle's."""
    everyone = getattr(session.scheduler, "user_live", None)
    if isinstance(everyone, int):
        return everyone
    return sum(1 for row in obs.by_id.values() if row.state not in FINISHED)


def _say_budget(
    held: Held, deferred: Sequence[str], budget: Budget, say: Callable[[str], None]
) -> None:
    """One line when a budget left ready jobs for the next round."""
    waiting = len(held.held) + len(deferred)
    if not waiting:
        return
    why = [held.limit.source] if held.held else []
    if deferred:
        why.append(f"time budget {budget.seconds:g} s")
    say(budget_summary(held.ready, held.ready - waiting, "; ".join(why)))


@dataclass(frozen=True)
class StatusRow:
    job: str
    stage: str | None
    state: str
    attempt: int | None
    job_id: str | None
    reason: str
    last_event: str
    link: str | None = None  # a chain: the link `state` and `job_id` are of, as `2/3`


def status(session: Session) -> tuple[list[StatusRow], Observation]:
    history = session.history()
    obs, actions = session.look(history)
    by_job = {a.job: a for a in actions if not isinstance(a, Observed)}
    rows = []
    for job in session.bundle.jobs:
        now_state: Current = current(job.name, history, obs, job)
        latest = history.latest(job.name)
        state: str = now_state.state or "NOT_SUBMITTED"
        if not obs.available and now_state.live:
            state += "?"
        event = ""
        if job.name in history.dropped:
            event = f"dropped at {history.dropped[job.name].at}"
        elif latest is not None:
            event = latest.reason or latest.cause
        rows.append(
            StatusRow(
                job.name,
                job.stage,
                state,
                latest.attempt if latest else None,
                now_state.job_id or (latest.job_id if latest else None),
                by_job[job.name].reason,
                event,
                _link_of(now_state),
            )
        )
    return rows, obs


def _link_of(now_state: Current) -> str | None:
    chain = now_state.chain
    if chain is None or now_state.link is None:
        return None
    return f"{now_state.link}/{chain.length}"
