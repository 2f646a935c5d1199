"""Decide: a pure function from (lock, history, observation, now) to actions with reasons.

No I/O, no clock. Every job gets exactly one main action, or a `wait` saying why nothing
happens (what `--dry-run` prints), plus `event`, `state` and `link` entries for what it observed.
Rules that keep jobs from being lost or doubled: an unanswered scheduler means no destructive
action; a job the scheduler does not know is counted, never resubmitted on first sight; an
intent without a job id is looked up by its tag before anything is submitted again; a log
match is keyed by attempt, file and offset so it fires once.
"""

from __future__ import annotations

import dataclasses
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
    Recover,
    Settled,
    Submit,
    Unseen,
    Wait,
    main_action,
)
from .chain import chain_main, link_records, shown
from .conditions import all_hold, any_holds, verdict
from .current import current
from .events import observations
from .model import Attempt, Current, History, LockJob, Observation
from .policy import INTENT_GRACE, SUBMIT_TRIES, UNSEEN_LIMIT, budget_exhausted
from .recover import unclaimed
from .refusal import SUBMIT_FAILED, refused_wait
from .retry import budget_start, pending, revived
from .retry import cause as retry_cause
from .schedulers import SchedulerJob

StateOf = Callable[[str], str | None]
# A job settled in an earlier round (`History.settled`): it completed, and its records, which
# say so, need not be read again.
SETTLED = Current("COMPLETED", success=True, reason="completed in an earlier round")


@dataclass(frozen=True)
class Options:
    """What the user asked of this round beyond the defaults."""

    intent_grace: timedelta = INTENT_GRACE
    restart_changed: bool = False  # restart running jobs whose script changed, now
    prune: bool = False  # cancel jobs that are no longer in the bundle


DEFAULTS = Options()


@dataclass(frozen=True)
class _Round:
    """What every job's decision in one round reads."""

    history: History
    obs: Observation
    now: datetime
    options: Options
    states: Mapping[str, Current]
    # What conditions see of another job (`decide.job_state`).
    state_of: StateOf


def decide(
    jobs: Sequence[LockJob],
    history: History,
    obs: Observation,
    now: datetime,
    options: Options = DEFAULTS,
) -> list[Action]:
    history = revived(history)  # `oellm retry` of a dropped job undoes its drop
    states = {
        job.name: SETTLED if history.settled(job.name) else current(job.name, history, obs, job)
        for job in jobs
    }
    for job in jobs:
        done = _finished_already(job, states[job.name], history, obs, now)
        if done is not None:
            states[job.name] = done
    by_name = {job.name: job for job in jobs}
    plans: dict[str, list[Action]] = {}

    def job_state(name: str) -> str | None:
        """What conditions see of another job: its state once its restart policy has spoken.
        A job that ended and is about to run again counts as PENDING, not as how it ended."""
        found = states.get(name)
        if found is None:
            return None
        job = by_name.get(name)
        if (
            job is not None
            and found.terminal
            and not found.success
            and _runs_again(job, found, history, now)
        ):
            return "PENDING"
        return found.state

    round_ = _Round(history, obs, now, options, states, job_state)
    planned = [action for job in jobs for action in _plan(job.name, by_name, plans, round_)]
    return _throttled(jobs, planned, history) + _removed(set(by_name), history, obs, options)


def _plan(
    name: str, by_name: Mapping[str, LockJob], plans: dict[str, list[Action]], round_: _Round
) -> list[Action]:
    """A job's actions, kept in `plans`. Upstream jobs are planned first: whether they will
    run again decides our wait. (A function of its own, not a closure that calls itself: that
    would be a reference cycle, which keeps all that the round read alive until the garbage
    collector finds it.)"""
    if name not in plans:
        job = by_name[name]
        history = round_.history
        if name in history.damaged:
            plans[name] = [Wait(name, f"left alone: {history.damaged[name]}")]
            return plans[name]
        if history.settled(name):  # its upstream jobs have no say any more
            plans[name] = [Wait(name, "completed", outcome="completed")]
            return plans[name]
        upstream = {
            u: main_action(_plan(u, by_name, plans, round_)) for u in job.depends_on if u in by_name
        }
        planned = _decide_job(job, upstream, round_)
        plans[name] = [_unless_found(a, job, history, round_.obs) for a in planned]
    return plans[name]


def _finished_already(
    job: LockJob, now_state: Current, history: History, obs: Observation, now: datetime
) -> Current | None:
    """`job.finish_condition`: a job never submitted whose output exists already counts as
    completed (its dependants go on) and is not submitted."""
    if job.finish_condition is None or now_state.state is not None:
        return None
    if history.latest(job.name) is not None or job.name in history.dropped:
        return None
    holds, why = verdict(job.finish_condition, obs.files, obs.commands, lambda _: None, now)
    if not holds:
        return None
    return Current("COMPLETED", success=True, reason=f"finish_condition holds: {why}")


def _unless_found(action: Action, job: LockJob, history: History, obs: Observation) -> Action:
    """A new attempt is submitted only if SLURM has no submission of the job that no record
    names (a record lost or moved aside): such a submission is adopted instead."""
    if not isinstance(action, Submit) or action.link is not None:
        return action
    records = history.attempts.get(job.name, ())
    claimed = [
        job_id
        for attempt in records
        for job_id in (attempt.job_id, *(link.job_id for link in attempt.links))
        if job_id
    ]
    newest_recorded = max((a.attempt for a in records if a.job_id), default=0)
    found = unclaimed(
        obs.submissions.of(job.name, job.array_group, job.array_index), claimed, newest_recorded
    )
    if not found:
        return action
    newest = found[0]
    # The record's number never reuses one on disk; its tag is the one SLURM knows.
    attempt = max(newest.attempt or 0, action.attempt)
    # A chain: every link of that attempt that SLURM knows, in order.
    jobs = sorted(
        {f.link: f for f in found if f.attempt is not None and f.attempt == newest.attempt}.values()
        or [newest],
        key=lambda f: f.link,
    )
    return Recover(
        job.name,
        f"found {newest.tag} as job {newest.row.job_id} ({newest.row.state}) in SLURM, with "
        "no record of it",
        attempt=attempt,
        job_id=jobs[0].row.job_id,
        found=tuple((f.link, f.tag, f.row.job_id, _since(f.row)) for f in jobs),
    )


def _since(row: SchedulerJob) -> str | None:
    since = row.since
    return since.isoformat() if since is not None else None


def _new_attempt(action: Action) -> bool:
    return isinstance(action, Submit) and action.link is None


def _throttled(jobs: Sequence[LockJob], planned: list[Action], history: History) -> list[Action]:
    """`slurm.array_throttle: N` holds across submissions: SLURM applies `%N` within one array
    job only, and members that start later or restart go as arrays of their own. So while any
    member is in flight, at most N minus those in flight are submitted (lowest index first);
    the rest wait. With none in flight, all ready members go as one `--array=...%N`."""
    groups: dict[str, list[LockJob]] = {}
    for job in jobs:
        if job.array_group is not None and job.array_throttle:
            groups.setdefault(job.array_group, []).append(job)
    held: dict[str, Action] = {}
    for group, members in groups.items():
        throttle = members[0].array_throttle
        assert throttle is not None
        in_flight = sum(
            1
            for job in members
            if not history.settled(job.name)
            and (latest := history.latest(job.name)) is not None
            and latest.phase != "finished"
        )
        if not in_flight:
            continue
        index = {job.name: job.array_index or 0 for job in members}
        ready = sorted(
            (a for a in planned if _new_attempt(a) and a.job in index),
            key=lambda a: index[a.job],
        )
        for action in ready[max(0, throttle - in_flight) :]:
            latest = history.latest(action.job)
            held[action.job] = Wait(
                action.job,
                f"ready; array {group} has {in_flight} of at most {throttle} tasks in flight "
                "(slurm.array_throttle)",
                attempt=latest.attempt if latest is not None else None,
            )
    if not held:
        return planned
    return [held[a.job] if _new_attempt(a) and a.job in held else a for a in planned]


def _removed(names: set[str], history: History, obs: Observation, options: Options) -> list[Action]:
    """Jobs with records but no longer in the bundle: reported, cancelled only with --prune."""
    out: list[Action] = []
    for name in sorted(set(history.attempts) - names):
        if history.settled(name):
            continue  # it completed: nothing runs to report or cancel
        state = current(name, history, obs)
        if not state.live or name in history.dropped:
            continue
        latest = history.latest(name)
        assert latest is not None
        if options.prune and state.live_ids and obs.available:
            out.append(
                Cancel(
                    name,
                    "removed from the bundle (--prune)",
                    attempt=latest.attempt,
                    job_id=state.job_id,
                    origin="prune",
                    job_ids=state.live_ids,
                )
            )
        else:
            out.append(
                Wait(
                    name,
                    f"removed from the bundle, still {state.state}; --prune cancels it",
                    attempt=latest.attempt,
                    job_id=state.job_id,
                )
            )
    return out


def _decide_job(job: LockJob, upstream: Mapping[str, MainAction], round_: _Round) -> list[Action]:
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


def _in_flight(job: LockJob, latest: Attempt, round_: _Round) -> list[Action]:
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


def _ended(
    job: LockJob, latest: Attempt, now_state: Current, round_: _Round
) -> list[Action] | None:
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
        return [Submit(name, cause, attempt=_next_attempt(round_.history, name), cause=cause)]
    if latest.final_state == SUBMIT_FAILED:
        return [refused_wait(latest)]
    if not _dependency_broken(latest, now_state):
        return [_after_failure(job, round_.history, round_.now)]
    # SLURM cancelled it because an upstream job failed: gate it again like a new job, so
    # it runs once a restarted upstream completes, and stops if the upstream gives up.
    return None


def _ready(
    job: LockJob, latest: Attempt | None, upstream: Mapping[str, MainAction], round_: _Round
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


def _runs_again(job: LockJob, now_state: Current, history: History, now: datetime) -> bool:
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
        after = _after_failure(job, history, now, (*history.attempts[job.name][:-1], latest))
    else:
        after = _after_failure(job, history, now)
    return not (isinstance(after, Wait) and after.settled)


def _dependency_broken(latest: Attempt, now_state: Current) -> bool:
    return bool(
        latest.upstream_ids
        and now_state.state == "CANCELLED"
        and not latest.cancel_requested
        and not latest.restart_requested
    )


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
        if plan is not None and _new_attempt(plan):
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


def _after_failure(
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
    return Submit(name, cause, attempt=_next_attempt(history, name), cause=cause)


def _failed(state: str) -> Settled:
    """How a job that ended in `state` and will not run again ended."""
    return "cancelled" if state == "CANCELLED" else "failed"


def _next_attempt(history: History, name: str) -> int:
    latest = history.latest(name)
    return (latest.attempt + 1) if latest else 1


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
    job: LockJob, latest: Attempt, now_state: Current, round_: _Round, seen: Sequence[Observed]
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
