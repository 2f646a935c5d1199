"""Act: carry out decided actions, recording before and after each step that touches SLURM.

Records change first (a request, a link's outcome, a fired event: `changes.py`), then one
scancel for the round, then submissions (`submit.py`: intent, sbatch, job id, for each link of
a chain).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from . import changes
from .actions import Action, Submit
from .budget import plan_rank
from .bundle import Bundle
from .errors import SchedulerError, SchedulerUnavailable
from .model import History, Observation
from .records import Records
from .schedulers import Scheduler
from .submit import RoundOutcome, Submitter


def act(
    actions: Sequence[Action],
    bundle: Bundle,
    history: History,
    records: Records,
    scheduler: Scheduler,
    key: str,
    now: Callable[[], datetime],
    say: Callable[[str], None],
    obs: Observation | None = None,
    fence: Callable[[], None] | None = None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> RoundOutcome:
    """Record what changed, then cancel, then submit: a crash in between leaves records
    from which the next round carries on (a request is recorded before its scancel)."""
    done = changes.Round(bundle, records, scheduler, now, say, RoundOutcome(), history, obs, fence)
    try:
        for action in actions:
            changes.record(action, done)
    finally:
        # The changes to attempts' records, written together: in a round that sees the
        # first state of 10,000 array tasks, two syncs rather than 10,000 fsyncs. All are on
        # disk before anything is cancelled or submitted, as one by one.
        done.flush()
    if obs is not None:
        changes.save_log_states(obs, done)
    _cancel(done)
    submitter = Submitter(
        bundle, records, scheduler, key, now, done.note, done.outcome, fence or (lambda: None)
    )
    _submit_all([a for a in actions if isinstance(a, Submit)], submitter, done, out_of_time)
    return done.outcome


def _cancel(done: changes.Round) -> None:
    """Phase 2: one scancel for the round. Later jobs first, so that a queued link is gone
    before the one it waits for ends. scancel sends its requests in parallel, so this is
    likely, not certain; a link that starts in that instant is still cancelled by the same
    call."""
    if not done.to_cancel:
        return
    ids = sorted(done.to_cancel, key=_id_order, reverse=True)
    try:
        done.scheduler.cancel(ids)
        for job_id in ids:
            done.note(f"cancelled job {job_id} ({done.to_cancel[job_id]})")
    except SchedulerUnavailable as exc:
        done.outcome.unavailable = True
        done.outcome.errors.append(str(exc))
    except SchedulerError as exc:
        done.outcome.errors.append(str(exc))


def _submit_all(
    pending: list[Submit],
    submitter: Submitter,
    done: changes.Round,
    out_of_time: Callable[[], bool],
) -> None:
    """Phase 3, in plan order (`budget.plan_rank`): the ready members of an array as one
    sbatch each (at the place of its first member), the others one by one, a job queued
    behind one of this round (`job:<name>`) once that one has its id. Once `out_of_time`
    says so, the rest wait for the next round, unrecorded (the first submission always goes,
    so every round makes progress)."""
    if not pending:
        return
    outcome, bundle = done.outcome, done.bundle
    rank = plan_rank(bundle.jobs)
    pending = sorted(pending, key=lambda a: rank.get(a.job, len(rank)))
    batches = _array_batches(pending, bundle, done.records, done.scheduler)
    batch_of = {a.job: group for group, members in batches.items() for a in members}
    submitted: dict[str, str] = {}  # job -> job id, for `job:<name>` afterok references
    started = False
    while pending and not outcome.unavailable:
        left: list[Submit] = []
        gone: set[str] = set()  # jobs submitted with their array in this pass
        for number, action in enumerate(pending):
            if action.job in gone:
                continue
            group = batch_of.get(action.job)
            if outcome.unavailable or (group is None and not _resolvable(action, submitted)):
                left.append(action)
                continue
            if started and out_of_time():
                rest = [*left, *(a for a in pending[number:] if a.job not in gone)]
                outcome.deferred.extend(a.job for a in rest if a.link is None)
                return
            started = True
            if group is not None:
                members = batches.pop(group)
                gone.update(member.job for member in members)
                submitted.update(submitter.submit_array(bundle.arrays[group], members))
                continue
            behind = tuple(submitted.get(u.removeprefix("job:"), u) for u in action.upstream_ids)
            record = submitter.submit(
                dataclasses.replace(action, upstream_ids=behind), done.latest.get(action.job)
            )
            if record is not None:
                done.latest[action.job] = record
                if record.job_id:
                    submitted[action.job] = record.job_id
        if len(left) == len(pending):
            break  # an upstream's submission failed this round: the next round retries
        pending = left


def _array_batches(
    pending: Sequence[Submit], bundle: Bundle, records: Records, scheduler: Scheduler
) -> dict[str, list[Submit]]:
    """New attempts of members of one array, two or more, that can go as one `--array` job:
    not gated by SLURM dependencies and with no nodes to avoid (those go one by one)."""
    if not scheduler.arrays:
        return {}
    names = {job.name for job in bundle.jobs}
    batches: dict[str, list[Submit]] = {}
    for action in pending:
        if action.link is not None or action.upstream_ids or action.job not in names:
            continue
        job = bundle.job(action.job)
        if job.array_group is None or records.excluded_nodes(job.name):
            continue
        batches.setdefault(job.array_group, []).append(action)
    return {group: members for group, members in batches.items() if len(members) > 1}


def _resolvable(action: Submit, submitted: Mapping[str, str]) -> bool:
    """A submission queued behind a job of this same round waits until that one has an id."""
    waiting = {u.removeprefix("job:") for u in action.upstream_ids if u.startswith("job:")}
    return waiting <= set(submitted)


def _id_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", job_id)) or (0,)
