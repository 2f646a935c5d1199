"""One reconcile run, and the read-only status view: lock, load, observe, decide, act, report.

Exit codes of a run: 0 nothing needed doing, 1 something was done (or failed to be), 75 the
scheduler could not be reached (nothing destructive happened; cron retries next time).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from oellm.bundle_files import LOCK_NAME
from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_TEMPFAIL, EXIT_USER, CommandError
from oellm.shell import run

from . import prefetch, tags
from .act import act
from .actions import Action, MainAction, Observed, Submit, Wait, main_action
from .arrays import whole_arrays
from .budget import NO_LIMIT, Budget, Held, count_limit, within_count
from .budget import summary as budget_summary
from .bundle import Bundle, Recompiled, check_scripts, load_bundle, lock_bytes
from .current import current
from .decide import decide
from .decide_job import Options
from .errors import ReconcileError, SchedulerError, SchedulerUnavailable
from .identity import claim, key_for, read_identity
from .lock import Busy, LockLost, RenewFailed, StateLock
from .metrics_store import track as after_round_metrics
from .model import Attempt, Current, Dropped, History, Observation
from .moves import moved
from .observe import accounting_since, observe
from .policy import INTENT_GRACE
from .records import Records
from .retry import pending, revived
from .schedulers import FINISHED, Scheduler, slurm
from .submit import RoundOutcome

EXIT_QUIET = EXIT_OK
EXIT_ACTED = EXIT_DIFFERENT
EXIT_DAMAGED = EXIT_USER
EXIT_UNAVAILABLE = EXIT_TEMPFAIL
# How far back a round asks SLURM for submissions it has no record of, before it submits an
# attempt (OELLM_LOOKBACK_DAYS changes it): older ones are not found, and are submitted again.
LOOKBACK = timedelta(days=30)
# How long `oellm cancel` waits for a round that holds the state lock (OELLM_LOCK_WAIT_SECONDS).
CANCEL_LOCK_WAIT_S = 60.0

log = logging.getLogger("oellm.reconcile")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def project_key(bundle: Bundle) -> str:
    """The tag key of all of a bundle's submissions (see `identity`)."""
    return key_for(bundle.path, bundle.project, bundle.state_dir, bundle.state_path, bundle.key)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def scheduler_name(name: str | None) -> str:
    """The scheduler asked for, or the default: slurm where sbatch is installed."""
    if name is None:
        return "slurm" if slurm.available() else "local"
    return name


def make_scheduler(name: str | None, state_dir: Path) -> Scheduler:
    name = scheduler_name(name)
    if name == "slurm":
        return slurm.SlurmScheduler()
    if name == "local":
        from .schedulers.local import LocalScheduler  # its runner is only needed here

        return LocalScheduler(state_dir)
    raise ReconcileError(f"unknown scheduler '{name}'", hint="use --scheduler slurm or local")


def run_command(argv: tuple[str, ...], cwd: Path) -> bool:
    try:
        return run(list(argv), timeout=60, cwd=cwd).returncode == 0
    except CommandError:
        return False


def intent_grace() -> timedelta:
    """How long an unconfirmed submission is looked for before it counts as never made.

    OELLM_INTENT_GRACE_SECONDS shortens it (the fault-injection tests do); lowering it on a
    busy cluster risks submitting twice, so it is not a command-line option.
    """
    raw = os.environ.get("OELLM_INTENT_GRACE_SECONDS")
    try:
        return timedelta(seconds=float(raw)) if raw else INTENT_GRACE
    except ValueError:
        return INTENT_GRACE


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


class Session:
    """What a command needs about one bundle: the bundle, its records and its scheduler."""

    def __init__(
        self,
        path: Path,
        scheduler: str | None,
        options: Options | None = None,
        allow_edited: bool = False,
        claim_state: bool = False,
        early: bool = False,
    ) -> None:
        """`early`: start the sacct the last round asked before reading the bundle
        (`prefetch`), for a round about to run now: `close` drops it if no query took it."""
        name = scheduler_name(scheduler)
        early_slurm = slurm.SlurmScheduler() if early and name == "slurm" else None
        data = lock_bytes(path / LOCK_NAME) if early_slurm is not None else None
        state_dir = None
        if early_slurm is not None and data is not None:
            state_dir = prefetch.start(path, data, early_slurm)
        try:
            # Scripts are checked when they are about to be submitted (`checked`), not here.
            self.bundle = load_bundle(path, check_scripts=False, data=data, state_dir=state_dir)
        except BaseException:
            if early_slurm is not None:
                early_slurm.discard_prefetch()
            raise
        self.allow_edited = allow_edited
        self.options = options or Options(intent_grace())
        self.records = Records(self.bundle.state_path)
        self.claim_state = claim_state
        # --claim-state: this bundle takes over a state dir another bundle path used (the
        # same experiment moved or checked out twice); the key of its tags stays.
        found = read_identity(self.bundle.state_path) if claim_state else None
        self.key = found.key if found is not None else project_key(self.bundle)
        self.scheduler = early_slurm or make_scheduler(name, self.bundle.state_path)

    def close(self) -> None:
        """Drop the early sacct if no query took it."""
        if isinstance(self.scheduler, slurm.SlurmScheduler):
            self.scheduler.discard_prefetch()

    @property
    def prefix(self) -> str:
        return tags.prefix(self.key)

    def history(self, read_completed: bool = True) -> History:
        """The records; a round passes `read_completed=False` and reads the records of jobs
        settled in the completed folder only if it needs them (`Records.load`)."""
        history = self.records.load(read_completed)
        for last in history.in_flight():
            if last.scheduler != self.scheduler.name:
                raise ReconcileError(
                    f"job {last.job} attempt {last.attempt} runs on the '{last.scheduler}' "
                    f"scheduler, not '{self.scheduler.name}'",
                    str(self.records.attempt_path(last.job, last.attempt)),
                    hint=f"use --scheduler {last.scheduler} until it has finished",
                )
        return revived(history)  # a drop `oellm retry` undid no longer counts

    def look(self, history: History) -> tuple[Observation, list[Action]]:
        """Observe and decide. A round that would submit an attempt it has no record of
        first asks SLURM back to the lookback horizon for that job's earlier submissions
        (a record lost or moved aside), and decides again on that fuller view."""
        now = utcnow()
        obs = self._observe(history, now, None)
        actions = decide(self.bundle.jobs, history, obs, now, self.options)
        if any(_new_attempt(a) for a in actions) and not obs.looked_back:
            horizon = now - timedelta(days=_seconds("OELLM_LOOKBACK_DAYS", LOOKBACK.days))
            obs = self._observe(history, now, horizon)
            actions = decide(self.bundle.jobs, history, obs, now, self.options)
            if not obs.available:
                # Without SLURM's answer nothing is submitted: it may know these attempts.
                actions = [_unconfirmed(a) if _new_attempt(a) else a for a in actions]
        for action in actions:
            log.info("%s: %s: %s", action.job, action.kind, action.reason)
        return obs, actions

    def checked(
        self, history: History, obs: Observation, actions: list[Action]
    ) -> tuple[Observation, list[Action]]:
        """The round's view once the scripts it submits match the lockfile (ScriptChanged
        when one was edited, unless --allow-edited). A script that differs because the
        bundle was recompiled during the round is no edit: the round reads the new bundle
        (into the same state dir) and decides again."""
        for _ in range(3):
            if self.allow_edited:
                return obs, actions
            submits = {a.job for a in actions if isinstance(a, Submit)}
            try:
                check_scripts(self.bundle, (job for job in self.bundle.jobs if job.name in submits))
                return obs, actions
            except Recompiled as recompiled:
                fresh = load_bundle(self.bundle.path, check_scripts=False)
                if fresh.state_path != self.bundle.state_path or fresh.key != self.bundle.key:
                    raise recompiled from None
                self.bundle = fresh
                obs, actions = self.look(history)
        raise Recompiled(
            "the bundle was recompiled again and again while this round read it",
            str(self.bundle.path),
            hint="run oellm reconcile again once the compiles are done",
        )

    def observe_now(self, history: History) -> Observation:
        """What the scheduler says of the attempts in flight, without deciding anything."""
        return self._observe(history, utcnow(), None)

    def _observe(self, history: History, now: datetime, lookback: datetime | None) -> Observation:
        return observe(
            self.bundle,
            history,
            self.scheduler,
            self.prefix,
            now,
            run_command,
            self.records,
            lookback=lookback,
        )

    def claim(self) -> None:
        """Record that this bundle uses its state dir (held lock only)."""
        claim(self.bundle.path, self.bundle.project, self.key, self.records.state_dir)

    def apply_moves(self, say: Callable[[str], None]) -> None:
        for old, new in self.bundle.moved.items():
            if self.records.move(old, new):
                say(f"moved the records of {old} to {new}")


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


def _new_attempt(action: Action) -> bool:
    return isinstance(action, Submit) and action.link is None


def _unconfirmed(action: Action) -> Action:
    return Wait(
        action.job,
        "ready, but SLURM did not answer whether it knows an earlier submission; not "
        "submitted this round",
        attempt=action.attempt if isinstance(action, Submit) else None,
    )


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


@dataclass(frozen=True)
class CancelReport:
    exit_code: int
    errors: tuple[str, ...] = ()


def cancel_jobs(session: Session, names: Sequence[str], say: Callable[[str], None]) -> CancelReport:
    """The user's cancel: recorded as a request on each live attempt (and a drop for jobs
    never submitted), then sent to SLURM. A request SLURM did not take is sent again by every
    round until SLURM says the job ended; nothing is resubmitted."""
    known = {job.name for job in session.bundle.jobs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ReconcileError(f"no job named {', '.join(unknown)} in this bundle")
    selected = list(names) or [job.name for job in session.bundle.jobs]
    lock = StateLock(session.bundle.state_path)
    wait = _seconds("OELLM_LOCK_WAIT_SECONDS", CANCEL_LOCK_WAIT_S)
    try:
        lock.acquire(wait=wait)
    except Busy as busy:
        return CancelReport(
            EXIT_UNAVAILABLE,
            (f"{busy}; waited {wait:g} s for it. Nothing was cancelled: run oellm cancel again",),
        )
    try:
        session.claim()
        history = session.history(read_completed=False)
        # What runs now (squeue for the attempts in flight): a cancel decides nothing, so it
        # does not look back in accounting as a round about to submit does.
        obs = session.observe_now(history)
        live: list[str] = []
        stamp = utcnow().isoformat()
        requests: list[Attempt] = []
        drops: list[Dropped] = []
        said: list[str] = []
        for name in selected:
            if history.settled(name):
                continue  # it completed in an earlier round: nothing to cancel
            if name in history.damaged:
                say(f"{name}: not cancelled: {history.damaged[name]}")
                continue
            latest = history.latest(name)
            if latest is not None and latest.phase != "finished":
                now_state = current(name, history, obs, session.bundle.job(name))
                if not latest.cancel_requested:
                    requests.append(latest)
                live.extend(now_state.live_ids)
                ids = ", ".join(now_state.live_ids)
                said.append(f"cancel recorded for {name}" + (f" (job {ids})" if ids else ""))
            elif name not in history.dropped and not (latest is not None and latest.succeeded):
                drops.append(Dropped(name, USER_CANCEL, stamp))
                said.append(f"dropped {name}: it will not be submitted")
        # Recorded before scancel (a request SLURM did not take is sent again by rounds).
        session.records.request_cancels(requests, USER_CANCEL, stamp)
        session.records.write_batch([], drops)
        for line in said:
            say(line)
        if not live:
            return CancelReport(EXIT_ACTED if selected else EXIT_QUIET)
        try:
            lock.verify()
            # A whole array goes as its array job id, not as every task id (issue 15).
            sent = whole_arrays(live, _live_ids(history, obs))
            session.scheduler.cancel(sent)
        except SchedulerUnavailable as exc:
            return CancelReport(
                EXIT_UNAVAILABLE,
                (
                    f"SLURM did not take the cancel ({exc.message}); it is recorded, and every "
                    "`oellm reconcile` sends it again until SLURM confirms",
                ),
            )
        except SchedulerError as exc:
            return CancelReport(
                EXIT_ACTED,
                (
                    f"scancel failed ({exc}); the cancel is recorded, and the next "
                    "`oellm reconcile` sends it again",
                ),
            )
        tasks = set(live)
        # An array sent whole is named once, as SLURM's array job id.
        shown = (i if i in tasks else f"{i} (array: every task)" for i in sent)
        say(f"cancelled job {', '.join(shown)}")
        return CancelReport(EXIT_ACTED)
    finally:
        lock.release()


USER_CANCEL = "cancelled by the user"


def _live_ids(history: History, obs: Observation) -> set[str]:
    """Every job id of the state dir that may still run: SLURM's live rows and the recorded
    ids of attempts in flight (an array with one of them not cancelled is not cancelled
    whole, whether or not SLURM answered)."""
    live = {row.job_id for row in obs.by_id.values() if row.state not in FINISHED}
    for latest in history.in_flight():
        live.update(i for i in (latest.job_id, *(x.job_id for x in latest.links)) if i)
    return live
