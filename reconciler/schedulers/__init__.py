"""Schedulers behind one Protocol: `slurm` (sbatch/squeue/sacct/scancel) and `local`
(detached processes on this machine, for laptops and demos).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

# SLURM's base job states (squeue %T / sacct State without "by <uid>"), plus what the
# local scheduler reports. Anything else a site prints is kept as-is in `raw_state`.
JobState = Literal[
    "PENDING",
    "RUNNING",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "REQUEUED",
    "RESIZING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "OTHER",
]

FINISHED: frozenset[str] = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


@dataclass(frozen=True)
class SchedulerJob:
    """What the scheduler says about one job (one row of squeue or sacct)."""

    job_id: str
    name: str  # the tag the job name carries (tags.tag_of); any other name as it is
    state: JobState
    raw_state: str = ""
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    start: str | None = None
    end: str | None = None
    nodes: str | None = None
    source: Literal["queue", "accounting", "local"] = "queue"

    @property
    def since(self) -> datetime | None:
        """The earliest moment this row reports the job in a state: its start, or the end of
        one that ended without starting (cancelled while pending). Accounting asked from then
        on still lists the job. None when the row holds neither (a queued job, or a row only
        squeue holds)."""
        started, ended = row_time(self.start), row_time(self.end)
        known = [moment for moment in (started, ended) if moment is not None]
        return min(known) if known else None


def row_time(text: str | None) -> datetime | None:
    """A time as rows hold it (sacct's format, which the local scheduler writes too: local
    time, whole seconds, no zone) as an aware datetime; None for none or an unreadable one."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Submission:
    """One submission: the script, the tag it carries, the folder it runs from (and, when the
    job must run elsewhere, `chdir`: SLURM_SUBMIT_DIR stays `workdir`)."""

    script: Path
    tag: str
    workdir: Path
    extra_args: tuple[str, ...] = ()
    chdir: Path | None = None


class Scheduler(Protocol):
    name: str
    # Whether it runs `--array` jobs: tasks are then `<array job id>_<index>` in `query`.
    # Without arrays, each member of a `slurm.array` group is submitted as a job of its own.
    arrays: bool

    def submit(self, submission: Submission) -> str:
        """Submit and return the job id. Any failure raises SchedulerError (or its subclass
        SchedulerUnavailable); the caller treats the outcome as unknown until the tag is
        looked up."""
        ...

    def query(
        self, tag_prefix: str, since: datetime | None, *, known_ids: Collection[str] = ()
    ) -> list[SchedulerJob]:
        """All jobs of this user whose name starts with `tag_prefix` or whose id is in
        `known_ids`, live and (when `since` is given) finished since then: one queue call and
        at most one accounting call. Raises SchedulerUnavailable when it cannot be asked."""
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs (one call); unknown or finished ids are not an error."""
        ...

    def exclude(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        """Keep queued jobs off these nodes from now on (one call). Raises SchedulerError
        when the scheduler refuses, e.g. for a job that started meanwhile."""
        ...
