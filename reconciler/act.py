"""Act: carry out decided actions, recording before and after each step that touches SLURM.

Records change first (a request, a link's outcome, a fired event), then one scancel for the
round, then submissions (`submit.py`: intent, sbatch, job id, for each link of a chain).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from oellm.errors import CommandError
from oellm.shell import run

from .actions import (
    Action,
    Adopt,
    Cancel,
    Drop,
    Finish,
    Fired,
    LinkSeen,
    Lost,
    Recover,
    StateSeen,
    Submit,
    Unseen,
    Wait,
)
from .budget import plan_rank
from .bundle import Bundle
from .current_log import point_current_log
from .errors import SchedulerError, SchedulerUnavailable
from .model import Attempt, Dropped, History, Link, LogState, Observation
from .record_file import RecordExists
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
    done = _Round(bundle, records, scheduler, now, say, RoundOutcome(), history, obs, fence)
    try:
        for action in actions:
            _record(action, done)
    finally:
        # The changes to attempts' records, written together: in a round that sees the
        # first state of 10,000 array tasks, two syncs rather than 10,000 fsyncs. All are on
        # disk before anything is cancelled or submitted, as one by one.
        done.flush()
    if obs is not None:
        _save_log_states(obs, done)
    _cancel(done)
    submitter = Submitter(
        bundle, records, scheduler, key, now, done.note, done.outcome, fence or (lambda: None)
    )
    _submit_all([a for a in actions if isinstance(a, Submit)], submitter, done, out_of_time)
    return done.outcome


class _Round:
    """What the phases of one `act` share: the newest record of each job, what to cancel."""

    def __init__(
        self,
        bundle: Bundle,
        records: Records,
        scheduler: Scheduler,
        now: Callable[[], datetime],
        say: Callable[[str], None],
        outcome: RoundOutcome,
        history: History,
        obs: Observation | None,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.bundle, self.records, self.scheduler = bundle, records, scheduler
        self.fence = fence or (lambda: None)
        self.now, self.say, self.outcome = now, say, outcome
        self.progress = obs.progress if obs is not None else {}
        # The records read (a settled job's are read only if asked for: no action is for one).
        self.latest = {job: a[-1] for job, a in history.read().items() if a}
        self.names = {job.name for job in bundle.jobs}
        self.to_cancel: dict[str, str] = {}  # job id -> why
        self.changed: dict[tuple[str, int], Attempt] = {}  # records to write (`flush`)
        self.recovered: list[Attempt] = []  # records to create (`flush`)
        self.refire: set[str] = set()  # jobs whose fired event could not be carried out

    def note(self, line: str) -> None:
        self.outcome.acted.append(line)
        self.say(line)

    def save(self, record: Attempt) -> None:
        """An attempt's new record: the newest from now on, written by `flush`."""
        self.changed[(record.job, record.attempt)] = record
        self.latest[record.job] = record

    def recover(self, record: Attempt) -> None:
        """A new attempt's first record, for a job found in SLURM: created by `flush`."""
        self.recovered.append(record)
        self.latest[record.job] = record

    def flush(self) -> None:
        """Write what the round changed: new records exclusively (`create`), from BATCH_MIN
        on with one sync for all; changed ones atomically, from BATCH_MIN on with two."""
        recovered, self.recovered = self.recovered, []
        changed, self.changed = self.changed, {}
        if not recovered and not changed:
            return
        self.fence()  # the lease still ours: no other round has read these records meanwhile
        found = self.records.create_many(recovered)
        exists = [(r, path) for r, path in zip(recovered, found, strict=True) if path is not None]
        for record, _ in exists:  # another round's record: not ours to write over
            changed.pop((record.job, record.attempt), None)
        self.records.write_batch(list(changed.values()), [])
        if exists:
            raise RecordExists(exists[0][1])

    def follow_chain(self, job: str, job_id: str | None) -> None:
        """Point a chain's `log_path_current` at the link that runs now (or that ended it)."""
        record = self.latest.get(job)
        if record is not None and record.links and job_id and job in self.names:
            point_current_log(self.bundle, self.bundle.job(job), job_id)


def _record(action: Action, done: _Round) -> None:
    """Phase 1: what an action changes in the records (nothing for a `Submit`)."""
    record = done.latest.get(action.job)
    match action:
        case Wait():  # most jobs, most rounds: no time stamp to make
            done.follow_chain(action.job, action.job_id)
        case Submit():
            pass  # phase 3
        case Recover():
            _recover(action, done, done.now().isoformat())
        case Drop():
            done.records.drop(Dropped(action.job, action.reason, done.now().isoformat()))
            done.note(f"dropped {action.job}: {action.reason}")
        case Cancel():
            _cancel_request(action, record, done, done.now().isoformat())
        case Fired() if record is not None:
            # An event's steps (a hook, an exclude) act outside the records: each is kept
            # on disk as soon as it ran, so that a crash repeats at most that one.
            done.flush()
            _change(action, record, done, done.now().isoformat())
            done.flush()
        case _ if record is not None:
            _change(action, record, done, done.now().isoformat())


def _change(
    action: StateSeen | Fired | LinkSeen | Adopt | Finish | Unseen | Lost,
    record: Attempt,
    done: _Round,
    stamp: str,
) -> None:
    """What an observation or an attempt's change writes into the attempt's record."""
    match action:
        case StateSeen():
            done.save(dataclasses.replace(record, last_state=action.state))
        case Fired():
            _fired(action, record, done, stamp)
        case LinkSeen():
            done.save(_link(action, record, stamp, done.note))
        case Adopt():
            _adopt(action, record, done, stamp)
        case Finish():
            _finish(action, record, done, stamp)
        case Unseen():
            done.save(dataclasses.replace(record, unseen=record.unseen + 1))
        case Lost():
            _lost(action, record, done, stamp)


def _fired(action: Fired, record: Attempt, done: _Round, stamp: str) -> None:
    steps = _Steps(done.bundle, done.records, done.scheduler, done.note, done.outcome,
                   action.queued_ids)  # fmt: skip
    fired = _event(action, record, stamp, steps)
    if fired is None:
        # The scheduler did not answer an exclude_node: nothing of this event is kept, and
        # its lines are read again next round, so it fires again then.
        done.refire.add(action.job)
    else:
        done.save(fired)
        done.to_cancel.update(steps.to_cancel)


def _adopt(action: Adopt, record: Attempt, done: _Round, stamp: str) -> None:
    adopted = dataclasses.replace(
        record,
        phase="submitted",
        job_id=action.job_id,
        submitted_at=record.submitted_at or stamp,
        unseen=0,
    )
    if adopted.links:
        adopted = adopted.with_link(1, phase="submitted", job_id=action.job_id, submitted_at=stamp)
    done.save(adopted)
    done.note(f"adopted {action.job} attempt {record.attempt}: {action.reason}")


def _recover(action: Recover, done: _Round, stamp: str) -> None:
    done.recover(_recovered(action, done.bundle, done.scheduler.name, stamp))
    done.note(f"recovered {action.job} attempt {action.attempt}: {action.reason}")


def _finish(action: Finish, record: Attempt, done: _Round, stamp: str) -> None:
    iteration = done.progress.get(action.job)
    chained = bool(record.links)
    done.save(
        dataclasses.replace(
            record,
            phase="finished",
            # A chain keeps its first link's id; its links hold the others.
            job_id=record.job_id if chained else (action.job_id or record.job_id),
            final_state=action.state,
            exit_code=action.exit_code,
            ended_at=stamp,
            iteration=iteration if iteration is not None else record.iteration,
            reason=action.reason if chained or action.state == "LOST" else record.reason,
        )
    )
    # `log_path_current` stays on the link that ended the chain.
    done.follow_chain(action.job, action.job_id)
    exit_text = f" (exit {action.exit_code})" if action.exit_code is not None else ""
    done.note(f"{action.job} attempt {record.attempt} {action.state}{exit_text}")


def _lost(action: Lost, record: Attempt, done: _Round, stamp: str) -> None:
    done.save(
        dataclasses.replace(
            record,
            phase="finished",
            final_state="NOT_SUBMITTED",
            ended_at=stamp,
            reason=record.reason or action.reason,
        )
    )
    done.note(f"{action.job} attempt {record.attempt}: {action.reason}")


def _cancel_request(action: Cancel, record: Attempt | None, done: _Round, stamp: str) -> None:
    """Record why, where the cancel changes what later rounds do, then queue its job ids."""
    if action.origin == "restart" and record is not None:
        done.save(dataclasses.replace(record, restart_requested=action.reason))
    elif action.origin == "condition" and record is not None and record.links:
        # Recorded, so that a chain between two links queues no further one.
        done.save(dataclasses.replace(record, cancel_requested=action.reason))
    elif action.origin == "prune":
        done.records.drop(Dropped(action.job, action.reason, stamp))
    for job_id in action.job_ids or ((action.job_id,) if action.job_id else ()):
        done.to_cancel.setdefault(job_id, f"{action.job}: {action.reason}")


def _save_log_states(obs: Observation, done: _Round) -> None:
    """How far each attempt's logs were read. Only after the events of these lines are in
    the ledger: a crash re-reads, never skips."""
    for job, read in obs.logs.items():
        record = done.latest.get(job)
        if record is None or job in done.refire:
            continue
        growth = obs.log_growth.get(job)
        done.records.save_log_state(
            job,
            record.attempt,
            LogState(
                offsets=dict(read.offsets),
                last_size=read.size,
                last_growth=growth.isoformat() if growth else None,
            ),
        )


def _cancel(done: _Round) -> None:
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
    pending: list[Submit], submitter: Submitter, done: _Round, out_of_time: Callable[[], bool]
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


def _recovered(action: Recover, bundle: Bundle, scheduler: str, stamp: str) -> Attempt:
    """The record of a submission found in SLURM (by its tag) that had none; the script is
    taken to be the bundle's current one.

    Each job is taken as submitted when SLURM first reports it (its start, or its end), not
    at this round's stamp: later rounds ask accounting from the attempt's intent on
    (`observe`), and a job that ended before that window would never be seen again, and be
    counted lost though it completed. A job SLURM gives no time for (queued, or known to squeue
    alone) is live or ended within MinJobAge: the stamp keeps it in the window."""
    assert action.found
    job = bundle.job(action.job)
    first = action.found[0]
    # A chain's attempt tag is its first link's, whether or not SLURM still lists that link.
    tag = re.sub(r"\.link\d+(\.try\d+)?$", "", first[1]) if first[0] > 1 else first[1]
    chained = job.chain_repeat > 1 and job.array_group is None
    at = {job_id: _earlier(since, stamp) for _, _, job_id, since in action.found}
    links = tuple(
        Link(number, link_tag, "submitted", at[job_id], job_id=job_id, submitted_at=at[job_id])
        for number, link_tag, job_id, _ in action.found
    )
    # The attempt's time is its earliest job's: the window of later rounds covers them all.
    since = min(at.values(), key=datetime.fromisoformat)
    return Attempt(
        job=job.name,
        attempt=action.attempt,
        tag=tag,
        bundle_id=bundle.bundle_id,
        script_sha256=job.sha256,
        scheduler=scheduler,
        cause=f"recovered from SLURM: {action.reason}",
        phase="submitted",
        intent_at=since,
        job_id=first[2],
        submitted_at=since,
        chain_repeat=job.chain_repeat if chained else 1,
        links=links if chained else (),
    )


def _earlier(since: str | None, stamp: str) -> str:
    """SLURM's time for a job, unless it is later than the round's stamp (clocks of the
    login nodes and the controller differ a little): a record never claims the future."""
    if since is None or datetime.fromisoformat(since) >= datetime.fromisoformat(stamp):
        return stamp
    return since


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


def _link(action: LinkSeen, record: Attempt, stamp: str, note: Callable[[str], None]) -> Attempt:
    """Record what one link of a chain did, in the attempt's record."""
    if not any(link.link == action.link for link in record.links):
        return record  # written by an older round already
    change = action.change
    if change == "adopt":
        note(f"adopted {action.job} attempt {record.attempt}: {action.reason}")
        return record.with_link(
            action.link, phase="submitted", job_id=action.job_id, submitted_at=stamp, unseen=0
        )
    if change == "unseen":
        unseen = max(link.unseen for link in record.links if link.link == action.link)
        return record.with_link(action.link, unseen=unseen + 1)
    if change == "lost":
        note(f"{action.job} attempt {record.attempt}: {action.reason}")
        return record.with_link(action.link, phase="finished", state="NOT_SUBMITTED")
    note(f"{action.job} attempt {record.attempt}: {action.reason}")
    return record.with_link(
        action.link,
        phase="finished",
        job_id=action.job_id,
        state=action.state,
        exit_code=action.exit_code,
        reason=action.detail,
    )


@dataclasses.dataclass(frozen=True)
class _Steps:
    """What the steps of a fired event act on."""

    bundle: Bundle
    records: Records
    scheduler: Scheduler
    note: Callable[[str], None]
    outcome: RoundOutcome
    queued: tuple[str, ...]  # this attempt's jobs still pending in the queue
    # What the event cancels; the caller cancels it only once the event is recorded.
    to_cancel: dict[str, str] = dataclasses.field(default_factory=dict)

    def exclude(self, job: str, node: str) -> bool:
        """Record the node for every later submission of the job, and move the job's queued
        links off it now (`scontrol update`). Runs before the event is recorded, so a crash
        re-fires the event and repeats the update rather than losing it. False: the
        scheduler did not answer, and the event must fire again."""
        self.records.exclude_node(job, node)
        if not self.queued:
            return True
        nodes = self.records.excluded_nodes(job)
        try:
            self.scheduler.exclude(self.queued, nodes)
        except SchedulerUnavailable as exc:
            self.outcome.unavailable = True
            self.outcome.errors.append(str(exc))
            return False
        except SchedulerError as exc:
            # A link that started meanwhile cannot be moved; the pending ones still are.
            self.outcome.errors.append(f"{job}: {exc}")
            self.note(f"{job}: not every queued job could be moved off {','.join(nodes)}")
            return True
        self.note(f"{job}: queued job(s) {', '.join(self.queued)} now avoid {','.join(nodes)}")
        return True


def _event(action: Fired, record: Attempt, stamp: str, steps: _Steps) -> Attempt | None:
    """Carry out one fired event's actions; return the attempt with the event in its ledger,
    or None when a step must be tried again (the event then fires again next round).

    Requests (restart, cancel, finish) are written into the attempt record, so a crash cannot
    lose them; `run`, `append_to_file` and `exclude_node` run at least once.
    """
    bundle, note, to_cancel = steps.bundle, steps.note, steps.to_cancel
    event = dict(action.event)
    fields = _fields(action, record, event)
    done: list[str] = []
    updated = record
    for step in event["actions"]:
        kind = step["kind"]
        why = step.get("reason") or f"{event['event']}: {event.get('line') or event.get('trigger')}"
        live = action.job_ids or ((record.job_id,) if record.job_id else ())
        if kind == "restart":
            updated = dataclasses.replace(updated, restart_requested=why)
            for job_id in live:
                to_cancel[job_id] = f"{record.job}: restart, {why}"
        elif kind == "cancel":
            updated = dataclasses.replace(updated, cancel_requested=why)
            for job_id in live:
                to_cancel[job_id] = f"{record.job}: {why}"
        elif kind == "finish":
            updated = dataclasses.replace(updated, finish_requested=why)
        elif kind == "append_to_file":
            path = bundle.resolve(_format(step["path"], fields))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(_format(step["line"], fields) + "\n")
        elif kind == "exclude_node":
            node = _format(step["node"], fields).strip()
            if node and not steps.exclude(record.job, node):
                return None
        elif kind == "run":
            ok = _run_hook(step["command"], fields, bundle)
            if not ok:
                steps.outcome.errors.append(f"{record.job}: event {event['event']}: command failed")
        done.append(kind)
    event["at"] = stamp
    event["done"] = done
    note(f"{record.job} attempt {record.attempt}: {action.reason} -> {', '.join(done)}")
    return dataclasses.replace(updated, events=(*updated.events, event))


def _fields(action: Fired, record: Attempt, event: Mapping[str, Any]) -> dict[str, str]:
    fields = {
        "job": record.job,
        "attempt": str(record.attempt),
        "job_id": record.job_id or "",
        "event": str(event.get("event", "")),
        "line": str(event.get("line", "")),
        "trigger": str(event.get("trigger", "")),
    }
    for index, group in enumerate(event.get("groups", [])):
        fields[str(index)] = str(group)
    fields.update({str(k): str(v) for k, v in event.get("named", {}).items()})
    return fields


def _format(template: str, fields: Mapping[str, str]) -> str:
    """`{name}` fields from the event; unknown names stay as written."""
    return re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def _run_hook(command: str | list[str], fields: Mapping[str, str], bundle: Bundle) -> bool:
    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    env = {**os.environ, **{f"OELLM_{k.upper()}": v for k, v in fields.items()}}
    try:
        return run(argv, timeout=300, cwd=bundle.root, env=env).returncode == 0
    except CommandError:
        return False
