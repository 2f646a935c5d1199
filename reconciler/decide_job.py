"""One job's decision in a round, by the phase of its latest attempt: not submitted yet (gated
by its upstream jobs and its conditions), an intent to confirm, an attempt in flight, or one
that ended. Also what every job's decision reads of the round (`Round`, and the user's
`Options`). Pure, like decide.py: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .actions import (
    Action,
    Adopt,
    Cancel,
    Drop,
    Finish,
    Fired,
    Lost,
    MainAction,
    Observed,
    Submit,
    Unseen,
    Wait,
)
from .chain import chain_main, link_records, shown
from .conditions import all_hold, any_holds
from .events import observations
from .model import Attempt, Current, History, LockJob, Observation
from .policy import INTENT_GRACE, SUBMIT_TRIES, UNSEEN_LIMIT
from .refusal import SUBMIT_FAILED, refused_wait
from .restart import after_failure, next_attempt
from .retry import budget_start, pending
from .retry import cause as retry_cause

StateOf = Callable[[str], str | None]


@dataclass(frozen=True)
class Options:
    """What the user asked of this round beyond the defaults."""

    intent_grace: timedelta = INTENT_GRACE
    restart_changed: bool = False  # restart running jobs whose script changed, now
    prune: bool = False  # cancel jobs that are no longer in the bundle


DEFAULTS = Options()


@dataclass(frozen=True)
class Round:
    """What every job's decision in one round reads."""

    history: History
    obs: Observation
    now: datetime
    options: Options
    states: Mapping[str, Current]
    # What conditions see of another job (`decide.job_state`).
    state_of: StateOf


def decide_job(job: LockJob, upstream: Mapping[str, MainAction], round_: Round) -> list[Action]:
    """One job's actions, by the phase of its latest attempt."""
    now_state = round_.states[job.name]
    latest = round_.history.latest(job.name)
    if pending(round_.history, job.name) is not None:
        # `oellm retry` (retry.py): an ended or dropped job the user asked to run again is
        # gated like a new one, once.
        return _ready(job, latest, upstream, round_)
    if now_state.state == "DROPPED":
        # Never in flight (an attempt in flight is not DROPPED): the cancel stands.
        return [Wait(job.name, f"dropped: {now_state.reason}", outcome="cancelled")]
    if latest is None:
        if now_state.success:
            # Its `finish_condition` holds: its output exists already.
            return [Wait(job.name, f"completed: {now_state.reason}", outcome="completed")]
        return _ready(job, None, upstream, round_)
    match latest.phase:
        case "intent":
            return _unconfirmed(latest, round_.obs, round_.now, round_.options.intent_grace)
        case "submitted":
            return _in_flight(job, latest, round_)
        case "finished":
            return _ended(job, latest, now_state, round_) or _ready(job, latest, upstream, round_)


def _in_flight(job: LockJob, latest: Attempt, round_: Round) -> list[Action]:
    """A submitted attempt: what it shows this round, then its one main action."""
    name, obs = job.name, round_.obs
    now_state = round_.states[name]
    seen: list[Observed] = list(observations(job, latest, now_state, obs, round_.now))
    if now_state.chain is not None:
        seen += link_records(latest, now_state.chain, obs, round_.now, round_.options.intent_grace)
    dropped = round_.history.dropped.get(name)
    if dropped is not None and not now_state.terminal:
        # Written by an older oellm's cancel: sent again until SLURM confirms the end.
        if now_state.live_ids and obs.available:
            return [
                *seen,
                Cancel(
                    name,
                    f"cancel requested: {dropped.reason}",
                    attempt=latest.attempt,
                    job_id=now_state.job_id,
                    origin="user",
                    job_ids=now_state.live_ids,
                ),
            ]
        return [
            *seen,
            Wait(
                name,
                f"cancel requested: {dropped.reason}",
                attempt=latest.attempt,
                job_id=now_state.job_id or latest.job_id,
            ),
        ]
    changed = _changed(job, latest, now_state, obs, round_.options)
    if changed is not None:
        return [*seen, changed]
    return [*seen, _submitted(job, latest, now_state, round_, seen)]


def _ended(job: LockJob, latest: Attempt, now_state: Current, round_: Round) -> list[Action] | None:
    """A finished attempt: the job completed, stops, or runs again. None: it never reached
    the scheduler, or SLURM cancelled it for a failed upstream; it is gated like a new job."""
    name = job.name
    if latest.cancel_requested:
        # Cancelled before SLURM ever had it (its intent was never confirmed): not submitted.
        return [Wait(name, f"cancelled: {latest.cancel_requested}", outcome="cancelled")]
    if not now_state.terminal:
        return None
    if now_state.success:
        note = (
            " (its script changed since; rerun with a new job name)"
            if (latest.script_sha256 != job.sha256)
            else ""
        )
        return [Wait(name, "completed" + note, attempt=latest.attempt, outcome="completed")]
    if latest.script_sha256 != job.sha256:
        cause = f"script changed since attempt {latest.attempt} ended {now_state.state}"
        return [Submit(name, cause, attempt=next_attempt(round_.history, name), cause=cause)]
    if latest.final_state == SUBMIT_FAILED:
        return [refused_wait(latest)]
    if not _dependency_broken(latest, now_state):
        return [after_failure(job, round_.history, round_.now)]
    # SLURM cancelled it because an upstream job failed: gate it again like a new job, so
    # it runs once a restarted upstream completes, and stops if the upstream gives up.
    return None


def _ready(
    job: LockJob, latest: Attempt | None, upstream: Mapping[str, MainAction], round_: Round
) -> list[Action]:
    """Not submitted yet (or the last submission never reached the scheduler): submit it
    once its upstream jobs completed and its start conditions hold."""
    name, obs, now = job.name, round_.obs, round_.now
    failed_tries = _failed_submissions(round_.history, name)
    if failed_tries >= SUBMIT_TRIES:
        return [
            Wait(
                name,
                f"submission failed {failed_tries} times: {round_.states[name].reason}",
                outcome="failed",
            )
        ]
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, round_.state_of, now)
    if cancel:
        return [Drop(name, f"cancel condition holds: {why}")]
    attempt = (latest.attempt + 1) if latest else 1
    early = _slurm_gated(job, round_.states, upstream, attempt)
    if early is not None:
        return [early]
    for up_name in job.depends_on:
        up, up_action = round_.states.get(up_name), upstream.get(up_name)
        if up is None or not up.success:
            shown = "not started" if up is None or up.state is None else up.state
            if isinstance(up_action, Wait) and up_action.settled:
                return [Wait(name, f"upstream {up_name} ended {shown}", outcome="pending")]
            return [Wait(name, f"waiting for upstream {up_name} ({shown})")]
    ok, why = all_hold(job.start_conditions, obs.files, obs.commands, round_.state_of, now)
    if not ok:
        return [Wait(name, f"start condition: {why}")]
    cause = "first submission" if latest is None else f"resubmission: {latest.reason or '?'}"
    retry = pending(round_.history, name)
    if retry is not None:
        cause = retry_cause(retry)
    return [Submit(name, cause, attempt=attempt, cause=cause)]


def _dependency_broken(latest: Attempt, now_state: Current) -> bool:
    return bool(
        latest.upstream_ids
        and now_state.state == "CANCELLED"
        and not latest.cancel_requested
        and not latest.restart_requested
    )


def new_attempt(action: Action) -> bool:
    """Whether `action` submits a new attempt (not a chain's missing links)."""
    return isinstance(action, Submit) and action.link is None


def _slurm_gated(
    job: LockJob, states: Mapping[str, Current], upstream: Mapping[str, MainAction], attempt: int
) -> Submit | None:
    """`job.dependency: slurm`: submit as soon as every upstream job completed or is queued,
    with --dependency=afterok on the queued ones, so SLURM starts it without waiting for cron.
    Start conditions cannot be judged ahead of time, so jobs with some wait for the reconciler."""
    if job.dependency != "slurm" or job.start_conditions or not job.depends_on:
        return None
    waiting_on: list[str] = []
    for up_name in job.depends_on:
        up, plan = states.get(up_name), upstream.get(up_name)
        if up is None or up.success:
            continue
        if plan is not None and new_attempt(plan):
            # Submitted in this same round: act fills in its job id once sbatch returned it.
            waiting_on.append(f"job:{up_name}")
            continue
        if not up.live or not up.job_id or up.state == "UNKNOWN":
            return None  # not queued yet, or ended: the reconciler's own gating decides
        waiting_on.append(up.job_id)
    if not waiting_on:
        return None
    ids = ", ".join(w.removeprefix("job:") for w in waiting_on)
    cause = f"queued behind upstream job{'s' if len(waiting_on) > 1 else ''} {ids} (afterok)"
    return Submit(job.name, cause, attempt=attempt, cause=cause, upstream_ids=tuple(waiting_on))


def _changed(
    job: LockJob, latest: Attempt, now_state: Current, obs: Observation, options: Options
) -> Cancel | Wait | None:
    """An attempt in flight that runs an older script than the bundle now holds."""
    if latest.script_sha256 == job.sha256 or now_state.terminal or not obs.available:
        return None
    if latest.restart_requested or latest.cancel_requested or now_state.state == "UNKNOWN":
        return None
    if (now_state.state == "PENDING" or options.restart_changed) and now_state.live_ids:
        return Cancel(
            job.name,
            "script changed: resubmitting with the new one",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            origin="restart",
            job_ids=now_state.live_ids,
        )
    return Wait(
        job.name,
        f"{now_state.state.lower() if now_state.state else '?'} "
        "with the previous script; the next attempt uses the new one "
        "(--restart-changed restarts it now)",
        attempt=latest.attempt,
        job_id=now_state.job_id,
    )


def _unconfirmed(
    latest: Attempt, obs: Observation, now: datetime, grace: timedelta
) -> list[Action]:
    """An intent without a job id: found by its tag, not (yet) seen, or never submitted."""
    name = latest.job
    if not obs.available:
        return [
            Wait(
                name,
                "scheduler unavailable; submission not confirmed yet",
                attempt=latest.attempt,
            )
        ]
    row = obs.by_tag.get(latest.tag)
    if row is not None:
        return [
            Adopt(
                name,
                f"found {latest.tag} as job {row.job_id}",
                attempt=latest.attempt,
                job_id=row.job_id,
            )
        ]
    age = now - datetime.fromisoformat(latest.intent_at)
    if latest.unseen + 1 >= 2 and age >= grace:
        return [Lost(name, f"{latest.tag} never reached the scheduler", attempt=latest.attempt)]
    return [Unseen(name, f"{latest.tag} not (yet) known to the scheduler", attempt=latest.attempt)]


def _submitted(
    job: LockJob, latest: Attempt, now_state: Current, round_: Round, seen: Sequence[Observed]
) -> MainAction:
    """The main action of a submitted attempt: record its end, count it unseen, send a
    request again, cancel it, queue a chain's missing links, or wait."""
    name, obs, now = job.name, round_.obs, round_.now
    if now_state.terminal:
        return Finish(
            name,
            # A chain says which link ended it, and how.
            (now_state.chain and now_state.reason) or f"ended {now_state.state}",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            state=now_state.state,
            exit_code=now_state.exit_code,
        )
    if not obs.available:
        return Wait(name, "scheduler unavailable", attempt=latest.attempt, job_id=latest.job_id)
    if now_state.state == "UNKNOWN" and now_state.chain is None:
        if latest.unseen + 1 >= UNSEEN_LIMIT:
            return Finish(
                name,
                f"scheduler lost job {latest.job_id}",
                attempt=latest.attempt,
                job_id=latest.job_id,
                state="LOST",
            )
        return Unseen(
            name,
            f"scheduler has no record of job {latest.job_id}",
            attempt=latest.attempt,
            job_id=latest.job_id,
        )
    requested = latest.restart_requested or latest.cancel_requested
    if requested and now_state.live_ids:
        # A request recorded by an earlier round: cancelling again is harmless.
        return Cancel(
            name,
            requested,
            attempt=latest.attempt,
            job_id=now_state.job_id,
            origin="request",
            job_ids=now_state.live_ids,
        )
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, round_.state_of, now)
    if cancel and not requested:
        # `condition`: a chain between two links has nothing to cancel; the request is
        # recorded so that no further link is queued.
        return Cancel(
            name,
            f"cancel condition holds: {why}",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            origin="condition",
            job_ids=now_state.live_ids,
        )
    chained = chain_main(latest, now_state, seen, obs)
    if chained is not None:
        return chained
    text: str = "running" if now_state.state == "RUNNING" else (now_state.state or "?")
    if now_state.reason and now_state.reason not in ("None", "(null)"):
        text += f" ({now_state.reason})"
    text += shown(now_state)
    if requested:
        text += f"; {requested}: the submission is confirmed first"
    if any(isinstance(a, Fired) for a in seen):
        text += "; events fired"
    return Wait(
        name,
        text,
        attempt=latest.attempt,
        job_id=now_state.job_id or latest.job_id,
    )


def _failed_submissions(history: History, job: str) -> int:
    count, start = 0, budget_start(history, job)
    for attempt in reversed(history.attempts.get(job, ())):
        if attempt.attempt <= start:
            break  # `oellm retry` starts the count afresh
        if attempt.phase == "finished" and attempt.final_state == "NOT_SUBMITTED":
            count += 1
        else:
            break
    return count
