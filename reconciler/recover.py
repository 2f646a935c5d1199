"""Finding a job's submissions in SLURM when its records do not name them.

Every submission carries a tag in its job name (tags.py: an attempt, a chain link, an array
batch with the task index), so SLURM itself is the second ledger: before a round submits an
attempt it has no record of, it looks for that job's submissions no record claims. Found ones
are adopted (a record is written from SLURM's answer) instead of being submitted twice. Pure:
no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import tags
from .arrays import split_task_id
from .schedulers import SchedulerJob


@dataclass(frozen=True)
class Found:
    """One SLURM job of ours, as its tag describes it."""

    row: SchedulerJob
    attempt: int | None  # None: an array task (its batch tag names no attempt)
    link: int  # 1 for a single job or the first link of a chain
    tag: str  # the tag the record of this submission holds


class Submissions:
    """Our SLURM jobs by the job (or array group and index) their tags name: the rows of a
    query whose name starts with `prefix`, indexed when first asked. A round asks only before
    it submits an attempt it has no record of; most rounds never do, and the 10,000 tasks of
    an array sweep are then not indexed at all."""

    def __init__(self, rows: Iterable[SchedulerJob] = (), prefix: str = "") -> None:
        self._rows = tuple(rows)
        self._prefix = prefix

    @functools.cached_property
    def _index(
        self,
    ) -> tuple[dict[str, tuple[Found, ...]], dict[tuple[str, int], tuple[Found, ...]]]:
        by_job: dict[str, list[Found]] = {}
        by_task: dict[tuple[str, int], list[Found]] = {}
        for row in self._rows:
            parsed = tags.parse(row.name) if row.name.startswith(self._prefix) else None
            if parsed is None:
                continue
            if parsed.group is not None:
                _, index = split_task_id(row.job_id)
                if index is not None:
                    found = Found(row, None, 1, tags.member_tag(row.name, index))
                    by_task.setdefault((parsed.group, index), []).append(found)
            elif parsed.job is not None and parsed.attempt is not None:
                found = Found(row, parsed.attempt, parsed.link, row.name)
                by_job.setdefault(parsed.job, []).append(found)
        return (
            {job: tuple(found) for job, found in by_job.items()},
            {task: tuple(found) for task, found in by_task.items()},
        )

    @property
    def by_job(self) -> Mapping[str, tuple[Found, ...]]:
        return self._index[0]

    @property
    def by_task(self) -> Mapping[tuple[str, int], tuple[Found, ...]]:
        return self._index[1]

    def of(self, job: str, group: str | None, index: int | None) -> tuple[Found, ...]:
        tasks = (
            self.by_task.get((group, index), ()) if group is not None and index is not None else ()
        )
        return (*self.by_job.get(job, ()), *tasks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Submissions):
            return NotImplemented
        return self._index == other._index

    def __hash__(self) -> int:
        return hash((frozenset(self.by_job), frozenset(self.by_task)))

    def __repr__(self) -> str:
        return f"Submissions(by_job={self.by_job!r}, by_task={self.by_task!r})"


NOTHING = Submissions()


def index_tags(rows: Iterable[SchedulerJob], prefix: str) -> Submissions:
    """The submissions among `rows` whose tags start with `prefix` (indexed when asked)."""
    return Submissions(rows, prefix)


def unclaimed(
    found: Sequence[Found], claimed_ids: Iterable[str], newest_attempt: int
) -> tuple[Found, ...]:
    """The submissions of a job that no record claims and that are newer than what the records
    hold: an attempt number above `newest_attempt` (the newest attempt a record gives a job
    id), or (array tasks, whose tags carry no attempt) a job id newer than every recorded one.
    Newest first."""
    claimed = set(claimed_ids)
    newest = max((_order(job_id) for job_id in claimed), default=(-1,))
    out = [
        f
        for f in found
        if f.row.job_id not in claimed
        and (f.attempt > newest_attempt if f.attempt is not None else _order(f.row.job_id) > newest)
    ]
    return tuple(
        sorted(out, key=lambda f: (f.attempt or 0, f.link, _order(f.row.job_id)), reverse=True)
    )


def _order(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", job_id)) or (0,)
