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

from .actions import Action, ActionKind, main
from .bundle import LockJob
from .chain import chain_main, link_records, shown
from .conditions import all_hold, any_holds, verdict
from .current import Current, current
from .events import observations
from .observe import Observation
from .policy import INTENT_GRACE, SUBMIT_TRIES, UNSEEN_LIMIT, budget_exhausted
from .records import Attempt, History
from .recover import unclaimed
from .refusal import SUBMIT_FAILED, refused_wait
from .retry import budget_start, pending, revived
from .retry import cause as retry_cause

__all__ = [
    "INTENT_GRACE",
    "Action",
    "ActionKind",
    "Current",
    "Options",
    "current",
    "decide",
    "main",
]


@dataclass(frozen=True)
class Options:
    """What the user asked of this round beyond the defaults."""

    intent_grace: timedelta = INTENT_GRACE
    restart_changed: bool = False  # restart running jobs whose script changed, now
    prune: bool = False  # cancel jobs that are no longer in the bundle


def decide(
    jobs: Sequence[LockJob],
    history: History,
    obs: Observation,
    now: datetime,
    intent_grace: timedelta | Options = INTENT_GRACE,
) -> list[Action]:
    options = intent_grace if isinstance(intent_grace, Options) else Options(intent_grace)
    history = revived(history)  # `oellm retry` of a dropped job undoes its drop
    states = {job.name: current(job.name, history, obs, job) for job in jobs}
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

    def plan(name: str) -> list[Action]:
        # Upstream jobs are planned first: whether they will run again decides our wait.
        if name not in plans:
            job = by_name[name]
            if name in history.damaged:
                plans[name] = [Action("wait", name, f"left alone: {history.damaged[name]}")]
                return plans[name]
            upstream = {u: main(plan(u)) for u in job.depends_on if u in by_name}
            planned = _one(job, states, upstream, history, obs, now, job_state, options)
            plans[name] = [_unless_found(a, job, history, obs) for a in planned]
        return plans[name]

    planned = [action for job in jobs for action in plan(job.name)]
    return _throttled(jobs, planned, history) + _removed(set(by_name), history, obs, options)


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
    if action.kind != "submit" or action.link is not None or action.attempt is None:
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
    return Action(
        "recover",
        job.name,
        f"found {newest.tag} as job {newest.row.job_id} ({newest.row.state}) in SLURM, with "
        "no record of it",
        attempt=attempt,
        job_id=jobs[0].row.job_id,
        found=tuple((f.link, f.tag, f.row.job_id) for f in jobs),
    )


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
            if (latest := history.latest(job.name)) is not None and latest.phase != "finished"
        )
        if not in_flight:
            continue
        index = {job.name: job.array_index or 0 for job in members}
        ready = sorted(
            (a for a in planned if a.kind == "submit" and a.link is None and a.job in index),
            key=lambda a: index[a.job],
        )
        for action in ready[max(0, throttle - in_flight) :]:
            latest = history.latest(action.job)
            held[action.job] = Action(
                "wait",
                action.job,
                f"ready; array {group} has {in_flight} of at most {throttle} tasks in flight "
                "(slurm.array_throttle)",
                attempt=latest.attempt if latest is not None else None,
            )
    if not held:
        return planned
    return [
        held[a.job] if a.kind == "submit" and a.link is None and a.job in held else a
        for a in planned
    ]


def _removed(names: set[str], history: History, obs: Observation, options: Options) -> list[Action]:
    """Jobs with records but no longer in the bundle: reported, cancelled only with --prune."""
    out: list[Action] = []
    for name in sorted(set(history.attempts) - names):
        state = current(name, history, obs)
        if not state.live or name in history.dropped:
            continue
        latest = history.latest(name)
        assert latest is not None
        if options.prune and state.live_ids and obs.available:
            out.append(
                Action(
                    "cancel",
                    name,
                    "removed from the bundle (--prune)",
                    attempt=latest.attempt,
                    job_id=state.job_id,
                    cause="prune",
                    job_ids=state.live_ids,
                )
            )
        else:
            out.append(
                Action(
                    "wait",
                    name,
                    f"removed from the bundle, still {state.state}; --prune cancels it",
                    attempt=latest.attempt,
                    job_id=state.job_id,
                )
            )
    return out


def _one(
    job: LockJob,
    states: dict[str, Current],
    upstream: Mapping[str, Action],
    history: History,
    obs: Observation,
    now: datetime,
    state_of: Callable[[str], str | None],
    options: Options,
) -> list[Action]:
    name = job.name
    now_state = states[name]
    latest = history.latest(name)
    if latest is not None and latest.phase == "intent":
        return _intent(latest, obs, now, options.intent_grace)

    if latest is not None and latest.phase == "submitted":
        seen = observations(job, latest, now_state, obs, now)
        if now_state.chain is not None:
            seen += link_records(latest, now_state.chain, obs, now, options.intent_grace)
        dropped = history.dropped.get(name)
        if dropped is not None and not now_state.terminal:
            # Written by an older oellm's cancel: sent again until SLURM confirms the end.
            if now_state.live_ids and obs.available:
                return [
                    *seen,
                    Action(
                        "cancel",
                        name,
                        f"cancel requested: {dropped.reason}",
                        attempt=latest.attempt,
                        job_id=now_state.job_id,
                        job_ids=now_state.live_ids,
                    ),
                ]
            return [
                *seen,
                Action(
                    "wait",
                    name,
                    f"cancel requested: {dropped.reason}",
                    attempt=latest.attempt,
                    job_id=now_state.job_id or latest.job_id,
                ),
            ]
        changed = _changed(job, latest, now_state, obs, options)
        if changed is not None:
            return [*seen, changed]
        return [*seen, _submitted(job, latest, now_state, obs, now, state_of, seen)]

    # `oellm retry` (retry.py): an ended job the user asked to run again is gated like a new one.
    retry = pending(history, name)
    if now_state.state == "DROPPED" and retry is None:
        return [Action("wait", name, f"dropped: {now_state.reason}", settled=True)]
    if latest is None and now_state.success:
        return [Action("wait", name, f"completed: {now_state.reason}", settled=True)]
    cancelled = latest is not None and latest.phase == "finished" and latest.cancel_requested
    if cancelled and retry is None:
        # Cancelled before SLURM ever had it (its intent was never confirmed): not submitted.
        assert latest is not None
        return [Action("wait", name, f"cancelled: {latest.cancel_requested}", settled=True)]

    if latest is not None and now_state.terminal and retry is None:
        if now_state.success:
            note = (
                " (its script changed since; rerun with a new job name)"
                if (latest.script_sha256 != job.sha256)
                else ""
            )
            return [Action("wait", name, "completed" + note, attempt=latest.attempt, settled=True)]
        if latest.script_sha256 != job.sha256 and not latest.cancel_requested:
            cause = f"script changed since attempt {latest.attempt} ended {now_state.state}"
            return [
                Action("submit", name, cause, attempt=_next_attempt(history, name), cause=cause)
            ]
        if latest.final_state == SUBMIT_FAILED:  # issue 13: refused for good
            return [refused_wait(latest)]
        if not _dependency_broken(latest, now_state):
            return [_after_failure(job, history, now)]
        # SLURM cancelled it because an upstream job failed: gate it again like a new job, so
        # it runs once a restarted upstream completes, and stops if the upstream gives up.

    # Not submitted yet (or the last submission never reached the scheduler).
    failed_tries = _failed_submissions(history, name)
    if failed_tries >= SUBMIT_TRIES:
        return [
            Action(
                "wait",
                name,
                f"submission failed {failed_tries} times: {now_state.reason}",
                settled=True,
            )
        ]
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, state_of, now)
    if cancel:
        return [Action("drop", name, f"cancel condition holds: {why}")]
    early = _slurm_gated(job, states, upstream)
    if early is not None:
        return [dataclasses.replace(early, attempt=(latest.attempt + 1) if latest else 1)]
    for up_name in job.depends_on:
        up, up_action = states.get(up_name), upstream.get(up_name)
        if up is None or not up.success:
            shown = "not started" if up is None or up.state is None else up.state
            if up_action is not None and up_action.settled:
                return [Action("wait", name, f"upstream {up_name} ended {shown}", settled=True)]
            return [Action("wait", name, f"waiting for upstream {up_name} ({shown})")]
    ok, why = all_hold(job.start_conditions, obs.files, obs.commands, state_of, now)
    if not ok:
        return [Action("wait", name, f"start condition: {why}")]
    attempt = (latest.attempt + 1) if latest else 1
    cause = "first submission" if latest is None else f"resubmission: {latest.reason or '?'}"
    if retry is not None:
        cause = retry_cause(retry)
    return [Action("submit", name, cause, attempt=attempt, cause=cause)]


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
        attempts = (*history.attempts[job.name][:-1], latest)
        history = dataclasses.replace(history, attempts={**history.attempts, job.name: attempts})
    return not _after_failure(job, history, now).settled


def _dependency_broken(latest: Attempt, now_state: Current) -> bool:
    return bool(
        latest.upstream_ids
        and now_state.state == "CANCELLED"
        and not latest.cancel_requested
        and not latest.restart_requested
    )


def _slurm_gated(
    job: LockJob, states: Mapping[str, Current], upstream: Mapping[str, Action]
) -> Action | None:
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
        if plan is not None and plan.kind == "submit" and plan.link is None:
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
    return Action(
        "submit", job.name, cause, attempt=None, cause=cause, upstream_ids=tuple(waiting_on)
    )


def _changed(
    job: LockJob, latest: Attempt, now_state: Current, obs: Observation, options: Options
) -> Action | None:
    """An attempt in flight that runs an older script than the bundle now holds."""
    if latest.script_sha256 == job.sha256 or now_state.terminal or not obs.available:
        return None
    if latest.restart_requested or latest.cancel_requested or now_state.state == "UNKNOWN":
        return None
    if (now_state.state == "PENDING" or options.restart_changed) and now_state.live_ids:
        return Action(
            "cancel",
            job.name,
            "script changed: resubmitting with the new one",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            cause="restart",
            job_ids=now_state.live_ids,
        )
    return Action(
        "wait",
        job.name,
        f"{now_state.state.lower() if now_state.state else '?'} "
        "with the previous script; the next attempt uses the new one "
        "(--restart-changed restarts it now)",
        attempt=latest.attempt,
        job_id=now_state.job_id,
    )


def _after_failure(job: LockJob, history: History, now: datetime) -> Action:
    """A finished attempt that did not succeed: restart it, wait for the backoff, or stop."""
    name = job.name
    # Budgets count the attempts of the current script only: a fixed script starts afresh,
    # and so does a job the user retried (`oellm retry`: only the attempts after it count).
    start = budget_start(history, name)
    attempts = [
        a
        for a in history.attempts.get(name, ())
        if a.final_state != "NOT_SUBMITTED" and a.script_sha256 == job.sha256 and a.attempt > start
    ] or [history.attempts[name][-1]]
    latest = attempts[-1]
    state = latest.final_state or "?"
    policy = job.restart
    if latest.cancel_requested:
        return Action("wait", name, f"cancelled: {latest.cancel_requested}", settled=True)
    if latest.restart_requested:
        cause = f"restart requested: {latest.restart_requested}"
    elif state in policy.get("on", ()):
        cause = f"restart after {state}"
    else:
        return Action("wait", name, f"ended {state}", attempt=latest.attempt, settled=True)
    stop = budget_exhausted(attempts, policy)
    if stop:
        return Action(
            "wait",
            name,
            f"ended {state}; not restarted: {stop}",
            attempt=latest.attempt,
            settled=True,
        )
    backoff = timedelta(seconds=float(policy.get("backoff_seconds") or 0))
    if latest.ended_at and now < datetime.fromisoformat(latest.ended_at) + backoff:
        return Action(
            "wait",
            name,
            f"ended {state}; restart after a {backoff.seconds} s backoff",
            attempt=latest.attempt,
        )
    return Action("submit", name, cause, attempt=_next_attempt(history, name), cause=cause)


def _next_attempt(history: History, name: str) -> int:
    latest = history.latest(name)
    return (latest.attempt + 1) if latest else 1


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
    seen: Sequence[Action],
) -> Action:
    name = job.name
    if now_state.terminal:
        return Action(
            "finish",
            name,
            # A chain says which link ended it, and how.
            (now_state.chain and now_state.reason) or f"ended {now_state.state}",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            state=now_state.state,
            exit_code=now_state.exit_code,
        )
    if not obs.available:
        return Action(
            "wait", name, "scheduler unavailable", attempt=latest.attempt, job_id=latest.job_id
        )
    if now_state.state == "UNKNOWN" and now_state.chain is None:
        if latest.unseen + 1 >= UNSEEN_LIMIT:
            return Action(
                "finish",
                name,
                f"scheduler lost job {latest.job_id}",
                attempt=latest.attempt,
                job_id=latest.job_id,
                state="LOST",
            )
        return Action(
            "unseen",
            name,
            f"scheduler has no record of job {latest.job_id}",
            attempt=latest.attempt,
            job_id=latest.job_id,
        )
    requested = latest.restart_requested or latest.cancel_requested
    if requested and now_state.live_ids:
        # A request recorded by an earlier round: cancelling again is harmless.
        return Action(
            "cancel",
            name,
            requested,
            attempt=latest.attempt,
            job_id=now_state.job_id,
            job_ids=now_state.live_ids,
        )
    cancel, why = any_holds(job.cancel_conditions, obs.files, obs.commands, state_of, now)
    if cancel and not requested:
        # `condition`: a chain between two links has nothing to cancel; the request is
        # recorded so that no further link is queued.
        return Action(
            "cancel",
            name,
            f"cancel condition holds: {why}",
            attempt=latest.attempt,
            job_id=now_state.job_id,
            cause="condition",
            job_ids=now_state.live_ids,
        )
    chained = chain_main(latest, now_state, seen, obs)
    if chained is not None:
        return chained
    text = "running" if now_state.state == "RUNNING" else (now_state.state or "?")
    if now_state.reason and now_state.reason not in ("None", "(null)"):
        text += f" ({now_state.reason})"
    text += shown(now_state)
    if requested:
        text += f"; {requested}: the submission is confirmed first"
    if any(a.kind == "event" for a in seen):
        text += "; events fired"
    return Action(
        "wait",
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
