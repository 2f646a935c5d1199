"""Whether a job that ended without success runs again: its restart policy restarts it now
or after a backoff, or it stops, and the `wait` says how it ended. Read by the job's own
decision (decide_job.py) and by the round, where a job about to run again counts as PENDING
to the conditions of other jobs. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

from .actions import Settled, Submit, Wait
from .model import Attempt, Current, History, LockJob
from .policy import budget_exhausted
from .retry import budget_start, pending


def runs_again(job: LockJob, now_state: Current, history: History, now: datetime) -> bool:
    """Whether a job that ended without success gets another attempt: its restart policy
    restarts it (now or after a backoff), or its script changed since."""
    latest = history.latest(job.name)
    if pending(history, job.name) is not None:
        return True  # `oellm retry` asked for a new attempt
    if latest is None or latest.cancel_requested or job.name in history.dropped:
        return False
    if latest.script_sha256 != job.sha256:
        return True
    if latest.phase != "finished":
        # Ended in this round's view, recorded by this round: judge it as recorded.
        latest = dataclasses.replace(
            latest,
            phase="finished",
            final_state=now_state.state,
            exit_code=now_state.exit_code,
            ended_at=now.isoformat(),
        )
        after = after_failure(job, history, now, (*history.attempts[job.name][:-1], latest))
    else:
        after = after_failure(job, history, now)
    return not (isinstance(after, Wait) and after.settled)


def after_failure(
    job: LockJob, history: History, now: datetime, recorded: Sequence[Attempt] | None = None
) -> Submit | Wait:
    """A finished attempt that did not succeed: restart it, wait for the backoff, or stop.
    `recorded`: the job's attempts as this round is about to record them (default: as they
    are recorded)."""
    name = job.name
    records = history.attempts.get(name, ()) if recorded is None else recorded
    # Budgets count the attempts of the current script only: a fixed script starts afresh,
    # and so does a job the user retried (`oellm retry`: only the attempts after it count).
    start = budget_start(history, name)
    attempts = [
        a
        for a in records
        if a.final_state != "NOT_SUBMITTED" and a.script_sha256 == job.sha256 and a.attempt > start
    ] or [records[-1]]
    latest = attempts[-1]
    state = latest.final_state or "?"
    policy = job.restart
    if latest.cancel_requested:
        return Wait(name, f"cancelled: {latest.cancel_requested}", outcome="cancelled")
    if latest.restart_requested:
        cause = f"restart requested: {latest.restart_requested}"
    elif state in policy.on:
        cause = f"restart after {state}"
    else:
        return Wait(name, f"ended {state}", attempt=latest.attempt, outcome=_failed(state))
    stop = budget_exhausted(attempts, policy)
    if stop:
        return Wait(
            name,
            f"ended {state}; not restarted: {stop}",
            attempt=latest.attempt,
            outcome=_failed(state),
        )
    backoff = timedelta(seconds=float(policy.backoff_seconds or 0))
    if latest.ended_at and now < datetime.fromisoformat(latest.ended_at) + backoff:
        return Wait(
            name,
            f"ended {state}; restart after a {backoff.seconds} s backoff",
            attempt=latest.attempt,
        )
    return Submit(name, cause, attempt=next_attempt(history, name), cause=cause)


def _failed(state: str) -> Settled:
    """How a job that ended in `state` and will not run again ended."""
    return "cancelled" if state == "CANCELLED" else "failed"


def next_attempt(history: History, name: str) -> int:
    """The number of the job's next attempt: one past its latest (1: none yet)."""
    latest = history.latest(name)
    return (latest.attempt + 1) if latest else 1
