"""Finding a job's submissions in SLURM when its records do not name them.

Every submission carries a tag in its job name (tags.py: an attempt, a chain link, an array
batch with the task index), so SLURM itself is the second ledger: before a round submits an
attempt it has no record of, it looks for that job's submissions no record claims. Found ones
are adopted (a record is written from SLURM's answer) instead of being submitted twice. Pure:
no I/O.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Submissions:
    """Our SLURM jobs by the job (or array group and index) their tags name."""

    by_job: Mapping[str, tuple[Found, ...]]
    by_task: Mapping[tuple[str, int], tuple[Found, ...]]

    def of(self, job: str, group: str | None, index: int | None) -> tuple[Found, ...]:
        tasks = (
            self.by_task.get((group, index), ()) if group is not None and index is not None else ()
        )
        return (*self.by_job.get(job, ()), *tasks)


NOTHING = Submissions({}, {})


def index_tags(rows: Iterable[SchedulerJob], prefix: str) -> Submissions:
    by_job: dict[str, list[Found]] = {}
    by_task: dict[tuple[str, int], list[Found]] = {}
    for row in rows:
        parsed = tags.parse(row.name) if row.name.startswith(prefix) else None
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
    return Submissions(
        {job: tuple(found) for job, found in by_job.items()},
        {task: tuple(found) for task, found in by_task.items()},
    )


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
