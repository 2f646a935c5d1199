"""Phase 1 of `act`: what each decided action writes into the attempts' records, kept in
one `Round` and written together (`Round.flush`), and the job ids it leaves for the round's one
scancel. A new record for a submission found in SLURM without one is made here too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime

from . import event_steps
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
from .bundle import Bundle
from .current_log import point_current_log
from .model import Attempt, Dropped, History, Link, LogState, Observation
from .record_file import RecordExists
from .records import Records
from .schedulers import Scheduler
from .submit import RoundOutcome


class Round:
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


def record(action: Action, done: Round) -> None:
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
    done: Round,
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


def _fired(action: Fired, record: Attempt, done: Round, stamp: str) -> None:
    steps = event_steps.Steps(done.bundle, done.records, done.scheduler, done.note, done.outcome,
                              action.queued_ids)  # fmt: skip
    fired = event_steps.event(action, record, stamp, steps)
    if fired is None:
        # The scheduler did not answer an exclude_node: nothing of this event is kept, and
        # its lines are read again next round, so it fires again then.
        done.refire.add(action.job)
    else:
        done.save(fired)
        done.to_cancel.update(steps.to_cancel)


def _adopt(action: Adopt, record: Attempt, done: Round, stamp: str) -> None:
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


def _recover(action: Recover, done: Round, stamp: str) -> None:
    done.recover(_recovered(action, done.bundle, done.scheduler.name, stamp))
    done.note(f"recovered {action.job} attempt {action.attempt}: {action.reason}")


def _finish(action: Finish, record: Attempt, done: Round, stamp: str) -> None:
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


def _lost(action: Lost, record: Attempt, done: Round, stamp: str) -> None:
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


def _cancel_request(action: Cancel, record: Attempt | None, done: Round, stamp: str) -> None:
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


def save_log_states(obs: Observation, done: Round) -> None:
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
