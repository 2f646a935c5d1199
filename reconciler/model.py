"""The reconciler's data, as plain records: the lockfile's jobs, the attempt records it keeps,
what one round observed, and a job's state as that round sees it.

Pure: nothing here reads a file or asks SLURM. Decide and the modules it uses (decide_job,
restart, current, chain, events, conditions, policy, actions, recover) import only such
modules, so the functional core can be checked without the shell around it (tests/test_layout.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

# The lockfile's jobs and arrays are the lockfile's own records, shared with the compiler.
from oellm.lockfile.model import ArrayGroup as ArrayGroup
from oellm.lockfile.model import LockJob as LockJob
from oellm.lockfile.model import RestartPolicy as RestartPolicy

from .recover import NOTHING, Submissions
from .schedulers import FINISHED, JobState, SchedulerJob

# --- the records of attempts ---------------------------------------------------------------

Phase = Literal["intent", "submitted", "finished"]


@dataclass(frozen=True)
class Link:
    """One SLURM job of a chained attempt (`job.chain_repeat`): its own intent, id and outcome,
    so each link is submitted exactly once. Link 1 carries the attempt's own tag."""

    link: int  # 1-based position in the chain
    tag: str
    phase: Phase
    intent_at: str
    job_id: str | None = None
    after: str | None = None  # the job id it was queued behind (--dependency=afterany)
    submitted_at: str | None = None
    state: str | None = None  # final state, once it ended
    exit_code: int | None = None
    reason: str | None = None  # why it ended as it did (squeue's reason), or why it was not
    unseen: int = 0


@dataclass(frozen=True)
class Attempt:
    job: str
    attempt: int
    tag: str
    bundle_id: str
    script_sha256: str
    scheduler: str
    cause: str
    phase: Phase
    intent_at: str
    job_id: str | None = None
    submitted_at: str | None = None
    final_state: str | None = None
    exit_code: int | None = None
    ended_at: str | None = None
    reason: str | None = None
    unseen: int = 0  # runs in which the scheduler answered but had no record of it
    last_state: str | None = None  # the last state observed, to see transitions
    nodes: str | None = None
    iteration: int | None = None  # progress (checkpoint iteration) when the attempt ended
    # Requests made by events; persisted before acting, so a crash cannot lose them.
    restart_requested: str | None = None
    cancel_requested: str | None = None
    finish_requested: str | None = None
    # The attempt's ledger of fired events: what fired, on which line, and what was done.
    events: tuple[dict[str, Any], ...] = ()
    # A chained attempt: how many links it queues, and each link's record (link 1 first).
    # Records written before chains existed have neither and read as a single job.
    chain_repeat: int = 1
    links: tuple[Link, ...] = ()
    # Submitted with --dependency=afterok on these job ids (job.dependency: slurm).
    upstream_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.events, list):
            object.__setattr__(self, "events", tuple(self.events))
        if isinstance(self.upstream_ids, list):
            object.__setattr__(self, "upstream_ids", tuple(self.upstream_ids))
        # Read back from JSON, links are dicts; anything else is a damaged record (TypeError).
        links = tuple(Link(**x) if isinstance(x, dict) else x for x in self.links)
        if not all(isinstance(link, Link) for link in links):
            raise TypeError("links must be link records")
        object.__setattr__(self, "links", links)

    @property
    def chained(self) -> bool:
        return bool(self.links)

    def with_link(self, number: int, **changes: Any) -> Attempt:
        """This attempt with the newest record of link `number` changed (a retried link has
        older records of the same number, which stay as they were)."""
        index = max(i for i, link in enumerate(self.links) if link.link == number)
        updated = dataclasses.replace(self.links[index], **changes)
        links = (*self.links[:index], updated, *self.links[index + 1 :])
        return dataclasses.replace(self, links=links)

    @property
    def succeeded(self) -> bool:
        if self.phase != "finished":
            return False
        if self.finish_requested:
            return True
        # SLURM says COMPLETED only for exit 0; the code itself may be unknown (an array task's
        # markers are written under its own job id, which the reconciler does not see).
        return self.final_state == "COMPLETED" and self.exit_code in (0, None)

    def fired(self, key: str) -> bool:
        return any(event.get("key") == key for event in self.events)


@dataclass(frozen=True)
class LogState:
    """How far the reconciler has read each watched file of one attempt."""

    offsets: dict[str, int] = dataclasses.field(default_factory=dict)
    last_size: int | None = None
    last_growth: str | None = None


@dataclass(frozen=True)
class Dropped:
    job: str
    reason: str
    at: str


@dataclass(frozen=True)
class RetryRequest:
    """`oellm retry`: the user asks for one new attempt after `after` (0: none yet), with
    fresh restart budgets; `revives` is the drop it undoes (its `at`). See `retry.py`."""

    job: str
    at: str
    after: int
    revives: str | None = None


@dataclass(frozen=True)
class History:
    attempts: Mapping[str, tuple[Attempt, ...]]  # job -> attempts, oldest first
    dropped: Mapping[str, Dropped]
    # job -> what is wrong with one of its records (the file and why); such a job is not
    # acted on, and the round ends with exit 2 naming the file.
    damaged: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # job -> the user's pending `oellm retry` request.
    retries: Mapping[str, RetryRequest] = dataclasses.field(default_factory=dict)
    # Jobs that completed in an earlier round and whose records this round has not read
    # (`Records.load(read_completed=False)`): `attempts` reads them when asked for one.
    unread: frozenset[str] = frozenset()

    def latest(self, job: str) -> Attempt | None:
        found = self.attempts.get(job, ())
        return found[-1] if found else None

    def settled(self, job: str) -> bool:
        """Whether the job completed in an earlier round (its records are in the state dir's
        completed folder and nothing was recorded for it since): a round has nothing to do
        for it, and need not read its records to know that."""
        return job in self.unread

    def read(self) -> Mapping[str, tuple[Attempt, ...]]:
        """The attempts of every job whose records were read (not those of `unread` jobs)."""
        return self.attempts.read if isinstance(self.attempts, Attempts) else self.attempts

    def in_flight(self) -> list[Attempt]:
        """The latest attempt of every job that has one in flight (a settled job has not)."""
        latest = (attempts[-1] for attempts in self.read().values() if attempts)
        return [a for a in latest if a.phase != "finished"]


class Attempts(Mapping[str, tuple[Attempt, ...]]):
    """job -> its attempts, oldest first: the records read, and the jobs of `unread`, whose
    records are read (from their files, once) the first time one is asked for."""

    def __init__(
        self,
        read: dict[str, tuple[Attempt, ...]],
        unread: frozenset[str],
        reader: Callable[[str], tuple[Attempt, ...]],
    ) -> None:
        self.read = read
        self._unread = unread
        self._reader = reader

    def __getitem__(self, job: str) -> tuple[Attempt, ...]:
        found = self.read.get(job)
        if found is None:
            if job not in self._unread:
                raise KeyError(job)
            found = self.read[job] = self._reader(job)
        return found

    def __contains__(self, job: object) -> bool:
        return job in self.read or job in self._unread

    def __iter__(self) -> Iterator[str]:
        yield from self.read
        yield from (job for job in sorted(self._unread) if job not in self.read)

    def __len__(self) -> int:
        return len(self.read) + sum(1 for job in self._unread if job not in self.read)


# --- what one round observed -----------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    file: str
    offset: int
    text: str
    link: int = 0  # the chain link whose log this is (0: not a chain)


@dataclass(frozen=True)
class LogRead:
    """What one round read of an attempt's watched files."""

    lines: tuple[LogLine, ...]
    offsets: Mapping[str, int]  # where the next round starts, per file
    size: int | None  # size of the main log, for inactivity


@dataclass(frozen=True)
class Markers:
    """What a job's script wrote into `<output_dir>/.oellm/`."""

    started: bool
    exit_code: int | None


@dataclass(frozen=True)
class Observation:
    asked: bool  # whether the scheduler was asked at all (nothing in flight: no need)
    available: bool
    error: str | None = None
    by_id: Mapping[str, SchedulerJob] = field(default_factory=dict)
    by_tag: Mapping[str, SchedulerJob] = field(default_factory=dict)
    markers: Mapping[str, Markers] = field(default_factory=dict)  # by scheduler job id
    files: Mapping[str, bool] = field(default_factory=dict)
    commands: Mapping[tuple[str, ...], bool] = field(default_factory=dict)
    logs: Mapping[str, LogRead] = field(default_factory=dict)  # by job: new lines this round
    log_growth: Mapping[str, datetime] = field(default_factory=dict)  # by job: main log grew
    progress: Mapping[str, int] = field(default_factory=dict)  # by job: checkpoint iteration
    # Our SLURM jobs by the job their tags name, for finding submissions no record names.
    submissions: Submissions = NOTHING
    # Whether accounting was asked back to the lookback horizon (see `observe`), so that a
    # submission missing from `submissions` is one SLURM does not know.
    looked_back: bool = False

    def seen(self, job_id: str | None, tag: str, finished_by_event: bool = False) -> Current:
        """One SLURM job in flight as this round sees it: by its id, or by its tag while the
        id is not recorded."""
        row = self.by_id.get(job_id) if job_id else self.by_tag.get(tag)
        if row is not None:
            job_id = row.job_id
        markers = self.markers.get(job_id) if job_id else None
        # The script's own exit marker is the last thing it writes: the attempt is over.
        if (
            markers is not None
            and markers.exit_code is not None
            and (row is None or row.state in FINISHED)
        ):
            ok = markers.exit_code == 0
            failed = row.state if row is not None and row.state != "COMPLETED" else "FAILED"
            return Current(
                "COMPLETED" if ok else failed,
                success=ok or finished_by_event,
                job_id=job_id,
                exit_code=markers.exit_code,
                reason=row.reason if row is not None else None,
            )
        if row is None:
            return Current("UNKNOWN", live=True, job_id=job_id, live_ids=_ids(job_id))
        if row.state in FINISHED:
            ok = row.state == "COMPLETED" and row.exit_code in (0, None)
            return Current(
                row.state,
                success=ok or finished_by_event,
                job_id=job_id,
                exit_code=row.exit_code,
                reason=row.reason,
            )
        return Current(
            row.state, live=True, job_id=job_id, reason=row.reason, live_ids=_ids(job_id)
        )


# --- a job as one round sees it --------------------------------------------------------------

# What a job is now: a scheduler state, or one only the reconciler knows: UNKNOWN (in flight,
# but the scheduler has no record of it), NOT_SUBMITTED (never reached the scheduler), DROPPED
# (cancelled before it was submitted), LOST (the scheduler lost it).
State = JobState | Literal["UNKNOWN", "NOT_SUBMITTED", "DROPPED", "LOST"]


def recorded_state(text: str | None) -> State | None:
    """A state as a record holds it. Records hold only states a round wrote from a `State`
    (codec checks a record's types, not this value)."""
    return cast("State | None", text)


# squeue's reason for a job whose dependency failed; with --kill-on-invalid-dep=yes SLURM
# cancels it and keeps the reason (seen on SLURM 22.05.8).
NEVER_SATISFIED = "DependencyNeverSatisfied"


@dataclass(frozen=True)
class LinkNow:
    """One link of a chain as this round sees it."""

    number: int
    record: Link
    tries: int  # records of this link number: a submission that never arrived is retried
    state: State | None  # None: the submission is not confirmed yet
    live: bool
    job_id: str | None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.state is not None and not self.live

    @property
    def never_satisfied(self) -> bool:
        return bool(self.reason and NEVER_SATISFIED in self.reason)


@dataclass(frozen=True)
class ChainNow:
    """A chained attempt as this round sees it: each link, and what the chain does next."""

    length: int  # links it queues (job.chain_repeat at submission; less when cut short)
    links: tuple[LinkNow, ...]  # the newest record of each link number, in order
    broken: LinkNow | None  # the first link that ended in a state that stops the chain
    finish_link: int | None  # a `finish` event fired on this link: later links are not needed
    no_more: str | None  # why no further link is queued (a request, a changed script, ...)
    cut: str | None  # why the chain is shorter than asked (a link that could not be queued)
    next_link: int | None  # the link to queue now (a resumed or retried submission)
    after: str | None  # the job id that link is queued behind, when it is still live

    @property
    def live(self) -> tuple[LinkNow, ...]:
        return tuple(link for link in self.links if not link.ended)

    @property
    def live_ids(self) -> tuple[str, ...]:
        """Every live link's job id, later links first (the order to cancel them in)."""
        return tuple(link.job_id for link in reversed(self.live) if link.job_id)

    @property
    def current(self) -> LinkNow | None:
        live = self.live
        return live[0] if live else None

    @property
    def over(self) -> bool:
        return not self.live and self.next_link is None

    def describe(self, link: int) -> str:
        return f"link {link}/{self.length}"


@dataclass(frozen=True)
class Current:
    """A job's state as this run sees it."""

    state: State | None  # None: never submitted
    live: bool = False
    success: bool = False
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    # Every job of the attempt still queued or running (a chain's live links, later first).
    live_ids: tuple[str, ...] = ()
    chain: ChainNow | None = None
    link: int | None = None  # chains: the link `state` is of

    @property
    def terminal(self) -> bool:
        return self.state is not None and not self.live


def _ids(job_id: str | None) -> tuple[str, ...]:
    return (job_id,) if job_id else ()
