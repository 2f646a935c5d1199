"""Decide: a pure function from (lock, history, observation, now) to actions with reasons.

No I/O, no clock. This module owns the round: jobs are planned upstream first, a job whose
output exists already counts as completed, a SLURM submission that no record names is adopted
rather than submitted again, array throttles hold across submissions, and jobs removed from
the bundle are reported. One job's own decision is in decide_job.py; whether a job that
ended without success runs again, in restart.py.

Every job gets exactly one main action, or a `wait` saying why nothing happens (what `--dry-run`
prints), plus `event`, `state` and `link` entries for what it observed. Rules that keep jobs
from being lost or doubled: an unanswered scheduler means no destructive action; a job the
scheduler does not know is counted, never resubmitted on first sight; an intent without a job
id is looked up by its tag before anything is submitted again; a log match is keyed by
attempt, file and offset so it fires once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from .actions import Action, Cancel, Recover, Submit, Wait, main_action
from .conditions import verdict
from .current import current
from .decide_job import DEFAULTS, Options, Round, decide_job, new_attempt
from .model import Current, History, LockJob, Observation
from .recover import unclaimed
from .restart import runs_again
from .retry import revived
from .schedulers import SchedulerJob

# A job settled in an earlier round (`History.settled`): it completed, and its records, which
# say so, need not be read again.
SETTLED = Current("COMPLETED", success=True, reason="completed in an earlier round")


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
            and runs_again(job, found, history, now)
        ):
            return "PENDING"
        return found.state

    round_ = Round(history, obs, now, options, states, job_state)
    planned = [action for job in jobs for action in _plan(job.name, by_name, plans, round_)]
    return _throttled(jobs, planned, history) + _removed(set(by_name), history, obs, options)


def _plan(
    name: str, by_name: Mapping[str, LockJob], plans: dict[str, list[Action]], round_: Round
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
        planned = decide_job(job, upstream, round_)
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
            (a for a in planned if new_attempt(a) and a.job in index),
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
    return [held[a.job] if new_attempt(a) and a.job in held else a for a in planned]


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
