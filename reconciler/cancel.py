"""`oellm cancel`: a cancel recorded on each live attempt (a drop for a job never submitted)
under the state lock, then one scancel; what SLURM did not take, every later round sends again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .arrays import whole_arrays
from .current import current
from .errors import ReconcileError, SchedulerError, SchedulerUnavailable
from .lock import Busy, StateLock
from .model import Attempt, Dropped, History, Observation
from .reconcile import EXIT_ACTED, EXIT_QUIET, EXIT_UNAVAILABLE
from .schedulers import FINISHED
from .session import Session, seconds, utcnow

# How long `oellm cancel` waits for a round that holds the state lock (OELLM_LOCK_WAIT_SECONDS).
CANCEL_LOCK_WAIT_S = 60.0


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
    wait = seconds("OELLM_LOCK_WAIT_SECONDS", CANCEL_LOCK_WAIT_S)
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
