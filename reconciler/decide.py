"""Decide: a pure function from (lock, history, observation, now) to actions with reasons.

No I/O, no clock. Every job gets exactly one entry, an action or a `wait` saying why nothing
happens, which is what `--dry-run` prints. Rules that keep jobs from being lost or doubled:
an unanswered scheduler means no destructive action; a job the scheduler does not know is
counted, never resubmitted on first sight; an intent without a job id is looked up by its tag
before anything is submitted again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from .bundle import LockJob
from .conditions import all_hold, any_holds
from .observe import Observation
from .records import Attempt, History
from .schedulers import FINISHED

ActionKind = Literal["submit", "adopt", "finish", "unseen", "lost", "cancel", "drop", "wait"]

# An intent that the scheduler still does not know after this long (and two looks) was never
# submitted: sbatch died before SLURM accepted it.
INTENT_GRACE = timedelta(minutes=2)
# A submitted job that SLURM has no record of, in this many consecutive answers, is lost.
UNSEEN_LIMIT = 3
# Submissions that failed this many times in a row are not tried again automatically.
SUBMIT_TRIES = 3


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    job: str
    reason: str
    attempt: int | None = None
    job_id: str | None = None
    state: str | None = None
    exit_code: int | None = None
    cause: str | None = None


@dataclass(frozen=True)
class Current:
    """A job's state as this run sees it."""

    state: str | None  # None: never submitted
    live: bool = False
    success: bool = False
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state is not None and not self.live


def current(job: str, history: History, obs: Observation) -> Current:
    latest = history.latest(job)
    in_flight = latest is not None and latest.phase != "finished"
    if job in history.dropped and not in_flight:
        return Current("DROPPED", reason=history.dropped[job].reason)
    if latest is None:
        return Current(None)
    if latest.phase == "finished":
        if latest.final_state == "NOT_SUBMITTED":
            return Current(None, reason=latest.reason)
        return Current(
            latest.final_state,
            success=latest.succeeded,
            job_id=latest.job_id,
            exit_code=latest.exit_code,
            reason=latest.reason,
        )
    job_id = latest.job_id
    row = obs.by_id.get(job_id) if job_id else obs.by_tag.get(latest.tag)
    if row is not None:
        job_id = row.job_id
    markers = obs.markers.get(job_id) if job_id else None
    # The script's own exit marker is the last thing it writes: the attempt is over.
    if (
        markers is not None
        and markers.exit_code is not None
        and (row is None or row.state in FINISHED)
    ):
        ok = markers.exit_code == 0
        failed = row.state if row is not None and row.state != "COMPLETED" else "FAILED"
        return Current(
            "COMPLETED" if ok else failed, success=ok, job_id=job_id, exit_code=markers.exit_code
        )
    if row is None:
        return Current("UNKNOWN", live=True, job_id=job_id)
    if row.state in FINISHED:
        ok = row.state == "COMPLETED" and row.exit_code in (0, None)
        return Current(row.state, success=ok, job_id=job_id, exit_code=row.exit_code)
    return Current(row.state, live=True, job_id=job_id, reason=row.reason)


def decide(
    jobs: Sequence[LockJob],
    history: History,
    obs: Observation,
    now: datetime,
    intent_grace: timedelta = INTENT_GRACE,
) -> list[Action]:
    states = {job.name: current(job.name, history, obs) for job in jobs}

    def job_state(name: str) -> str | None:
        found = states.get(name)
        return found.state if found else None

    actions: list[Action] = []
    for job in jobs:
        actions.extend(_one(job, states, history, obs, now, job_state, intent_grace))
    return actions


def _one(
    job: LockJob,
    states: dict[str, Current],
    history: History,
    obs: Observation,
    now: datetime,
    job_state: Callable[[str], str | None],
    intent_grace: timedelta,
) -> list[Action]:
    name = job.name
    now_state = states[name]
    latest = history.latest(name)
    state_of = job_state
    if latest is not None and latest.phase == "intent":
        return _intent(latest, obs, now, intent_grace)

    if latest is not None and latest.phase == "submitted":
        dropped = history.dropped.get(name)
        if dropped is not None and not now_state.terminal:
            return [
                Action(
                    "wait",
                    name,
                    f"cancel requested: {dropped.reason}",
                    attempt=latest.attempt,
                    job_id=latest.job_id,
                )
            ]
        return _submitted(job, latest, now_state, obs, now, state_of)

    if now_state.state == "DROPPED":
        return [Action("wait", name, f"dropped: {now_state.reason}")]

    if now_state.terminal:
        verdict = "completed" if now_state.success else f"ended {now_state.state}"
        return [Action("wait", name, verdict, attempt=latest.attempt if latest else None)]

    # Not submitted yet (or the last submission never reached the scheduler).
    failed_tries = _failed_submissions(history, name)
    if failed_tries >= SUBMIT_TRIES:
        return [Action("wait", name, f"submission failed {failed_tries} times: {now_state.reason}")]
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, state_of, now)
    if cancel:
        return [Action("drop", name, f"cancel condition holds: {why}")]
    for upstream in job.depends_on:
        up = states.get(upstream)
        if up is None or not up.success:
            shown = "not started" if up is None or up.state is None else up.state
            if up is not None and up.terminal:
                return [Action("wait", name, f"upstream {upstream} ended {shown}")]
            return [Action("wait", name, f"waiting for upstream {upstream} ({shown})")]
    ok, why = all_hold(job.start_conditions, obs.files, obs.commands, state_of, now)
    if not ok:
        return [Action("wait", name, f"start condition: {why}")]
    attempt = (latest.attempt + 1) if latest else 1
    cause = (
        "first submission"
        if latest is None
        else f"resubmission: {latest.reason or 'not submitted'}"
    )
    return [Action("submit", name, cause, attempt=attempt, cause=cause)]


def _intent(latest: Attempt, obs: Observation, now: datetime, grace: timedelta) -> list[Action]:
    name = latest.job
    if not obs.available:
        return [
            Action(
                "wait",
                name,
                "scheduler unavailable; submission not confirmed yet",
                attempt=latest.attempt,
            )
        ]
    row = obs.by_tag.get(latest.tag)
    if row is not None:
        return [
            Action(
                "adopt",
                name,
                f"found {latest.tag} as job {row.job_id}",
                attempt=latest.attempt,
                job_id=row.job_id,
            )
        ]
    age = now - datetime.fromisoformat(latest.intent_at)
    if latest.unseen + 1 >= 2 and age >= grace:
        return [
            Action(
                "lost", name, f"{latest.tag} never reached the scheduler", attempt=latest.attempt
            )
        ]
    return [
        Action(
            "unseen", name, f"{latest.tag} not (yet) known to the scheduler", attempt=latest.attempt
        )
    ]


def _submitted(
    job: LockJob,
    latest: Attempt,
    now_state: Current,
    obs: Observation,
    now: datetime,
    state_of: Callable[[str], str | None],
) -> list[Action]:
    name = job.name
    if now_state.terminal:
        return [
            Action(
                "finish",
                name,
                f"ended {now_state.state}",
                attempt=latest.attempt,
                job_id=now_state.job_id,
                state=now_state.state,
                exit_code=now_state.exit_code,
            )
        ]
    if not obs.available:
        return [
            Action(
                "wait", name, "scheduler unavailable", attempt=latest.attempt, job_id=latest.job_id
            )
        ]
    if now_state.state == "UNKNOWN":
        if latest.unseen + 1 >= UNSEEN_LIMIT:
            return [
                Action(
                    "finish",
                    name,
                    f"scheduler lost job {latest.job_id}",
                    attempt=latest.attempt,
                    job_id=latest.job_id,
                    state="LOST",
                )
            ]
        return [
            Action(
                "unseen",
                name,
                f"scheduler has no record of job {latest.job_id}",
                attempt=latest.attempt,
                job_id=latest.job_id,
            )
        ]
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, state_of, now)
    if cancel:
        return [
            Action(
                "cancel",
                name,
                f"cancel condition holds: {why}",
                attempt=latest.attempt,
                job_id=latest.job_id,
            )
        ]
    shown = now_state.state or "?"
    if now_state.reason and now_state.reason not in ("None", "(null)"):
        shown += f" ({now_state.reason})"
    return [
        Action(
            "wait",
            name,
            shown.lower() if shown == "RUNNING" else shown,
            attempt=latest.attempt,
            job_id=latest.job_id,
        )
    ]


def _failed_submissions(history: History, job: str) -> int:
    count = 0
    for attempt in reversed(history.attempts.get(job, ())):
        if attempt.phase == "finished" and attempt.final_state == "NOT_SUBMITTED":
            count += 1
        else:
            break
    return count
