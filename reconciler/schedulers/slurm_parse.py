"""SLURM's answers as `SchedulerJob` rows, without I/O: the squeue and sacct layouts oellm asks
for, the parsers of `sbatch`/`squeue`/`sacct` output (tested on tests/slurm/recorded), and the
merge and selection of one bundle's rows. "anchors 3.x" are in shared/reference/anchors.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import get_args

from oellm.reconciler import tags
from oellm.reconciler.arrays import expand_task_ids
from oellm.reconciler.schedulers import FINISHED, JobState, SchedulerJob

SQUEUE_FORMAT = "%i|%j|%T|%r|%k"
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Start", "End", "NodeList")
# slurmdbd first stores this placeholder JobName for a job that ended within about a second of
# its submission; the real name follows 2-5 s later (SLURM 22.05.8, tests/slurm/test_cluster.py).
ALLOCATION_PLACEHOLDER = "allocation"

_STATES: dict[str, JobState] = {state: state for state in get_args(JobState)}
_JOB_ID = re.compile(r"\d+")
# Values sacct/squeue print for "no value".
_EMPTY = frozenset({"", "None", "Unknown", "None assigned", "(null)"})


# --- parsers (pure) -------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """The job id from `sbatch --parsable`: `id` or `id;cluster`. Raises ValueError otherwise."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0]
        if _JOB_ID.fullmatch(job_id):
            return job_id
    raise ValueError(f"no job id in sbatch output {stdout!r}")


def split_squeue_line(line: str) -> tuple[str, str, str, str | None, str | None]:
    """(id, name, state, reason, comment) from one `%i|%j|%T|%r|%k` line. The comment is free
    text and may contain `|`, so split at most 4 times; `(null)` (no comment) and reason `None`
    (nothing to wait for) become None."""
    parts = line.split("|", 4)
    if len(parts) != 5:
        raise ValueError(f"squeue line has {len(parts)} of 5 fields: {line!r}")
    job_id, name, state, reason, comment = parts
    return job_id, name, state, _value(reason), _value(comment)


def parse_squeue(text: str) -> list[SchedulerJob]:
    """One row per job, named by the tag its job name carries (`tags.tag_of`); the tasks of an
    array that squeue folds into one row (`7_[2-3%2]`, pending ones) get one row each."""
    return read_queue(text, "").rows


@dataclass(frozen=True)
class Queue:
    """squeue's answer as one bundle's query needs it (`read_queue`)."""

    rows: list[SchedulerJob]  # the rows `select` could keep
    others: set[str]  # the ids of the other rows: jobs of other bundles (or of no bundle)
    live: int  # how many of all the listed jobs are queued or running


def read_queue(text: str, tag_prefix: str, known_ids: Collection[str] = ()) -> Queue:
    """`parse_squeue` of only the rows whose tag starts with `tag_prefix` or whose job (or
    array job) id is in `known_ids`: the others, which `select` would drop, are not made, only
    counted (in `live`, as a site's submit limit counts them) and their ids kept (`others`:
    their accounting rows are not ours either). Most of a user's squeue may be other sweeps:
    10,000 array tasks folded into ten rows are 10,000 rows once made."""
    known = set(known_ids)
    rows: list[SchedulerJob] = []
    others: set[str] = set()
    live = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        folded, name, raw_state, reason, _comment = split_squeue_line(line)
        ids = expand_task_ids(folded)
        state = job_state(raw_state)
        if state not in FINISHED:
            live += len(ids)
        tag = tags.tag_of(name)
        # `_is_known` of each id: the tasks of one row share their array job id.
        array_job = folded.split("_", 1)[0]
        if not tag.startswith(tag_prefix) and array_job not in known and known.isdisjoint(ids):
            others.update(ids)
            continue
        rows.extend(
            SchedulerJob(
                job_id=job_id,
                name=tag,
                state=state,
                raw_state=raw_state,
                reason=reason,
                source="queue",
            )
            for job_id in ids
        )
    return Queue(rows, others, live)


def parse_sacct(text: str) -> list[SchedulerJob]:
    """Rows of `sacct -P` with SACCT_FIELDS, named like squeue's rows. A job name is the only
    free text: take the id from the left and the five fixed fields from the right, so a `|` in
    a name cannot shift them.
    Array tasks that never started come folded (`7_[0,2,5]`, tests/slurm/recorded): one row
    each."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head = line.split("|", 1)
        tail = head[1].rsplit("|", 5) if len(head) == 2 else []
        if len(tail) != 6:
            raise ValueError(f"sacct line has too few fields: {line!r}")
        name, raw_state, exit_code, start, end, nodes = tail
        code, signal = parse_exit_code(exit_code)
        for job_id in expand_task_ids(head[0]):
            jobs.append(
                SchedulerJob(
                    job_id=job_id,
                    name=tags.tag_of(name),
                    state=job_state(raw_state),
                    raw_state=raw_state,
                    exit_code=code,
                    signal=signal,
                    start=_value(start),
                    end=_value(end),
                    nodes=_value(nodes),
                    source="accounting",
                )
            )
    return jobs


def job_state(raw: str) -> JobState:
    """The base state: sacct prints `CANCELLED by <uid>` (anchors 3.1); anything we do not know
    (SPECIAL_EXIT, REQUEUE_HOLD, STOPPED, ...) is OTHER, with the text kept in raw_state."""
    return _STATES.get(raw.split(" ", 1)[0], "OTHER")


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """`3:0` -> (3, 0): the exit status and the signal that ended the job (`0:53`: no status,
    signal 53, e.g. an --output folder that does not exist)."""
    code, _, signal = text.partition(":")
    return _int(code), _int(signal)


# --- selecting and merging (pure) -----------------------------------------------------------


def merge(queue: Sequence[SchedulerJob], accounting: Sequence[SchedulerJob]) -> list[SchedulerJob]:
    """One row per job id: a squeue row whose job is not finished is the freshest; otherwise
    sacct's row, which has exit code, times and nodes; a squeue row alone is kept as is. Order:
    squeue's rows, then jobs only sacct knows (it forgets nothing, squeue does after MinJobAge)."""
    acct = {job.job_id: job for job in accounting}
    merged = []
    for job in queue:
        other = acct.pop(job.job_id, None)
        if other is None or job.state not in FINISHED:
            merged.append(job)
        elif other.state not in FINISHED:
            # slurmdbd lags slurmctld: never step back from squeue's end state to sacct's
            # RUNNING; the exit code comes with a later query.
            merged.append(job)
        else:
            # squeue has the real name while sacct may still show the placeholder.
            merged.append(replace(other, name=job.name))
    merged.extend(acct.values())
    return merged


def select(
    jobs: Iterable[SchedulerJob], tag_prefix: str, known_ids: Collection[str] = ()
) -> list[SchedulerJob]:
    """Jobs whose name starts with `tag_prefix`, plus jobs whose id the caller already knows.

    Matching by name alone misses a job for the few seconds sacct calls it "allocation" (see
    ALLOCATION_PLACEHOLDER) once squeue has forgotten it: the caller must also match by the job
    ids it recorded, passed as `known_ids`. An array job id `7` also covers its tasks `7_1`,
    `7_[2-3]`. Placeholder rows are never matched by prefix, whatever the prefix.
    """
    known = set(known_ids)
    return [job for job in jobs if _is_known(job.job_id, known) or _matches(job, tag_prefix)]


def _is_known(job_id: str, known: set[str]) -> bool:
    return job_id in known or job_id.split("_", 1)[0] in known


def _matches(job: SchedulerJob, tag_prefix: str) -> bool:
    if job.source == "accounting" and job.name == ALLOCATION_PLACEHOLDER:
        return False
    return job.name.startswith(tag_prefix)


def _value(text: str) -> str | None:
    return None if text.strip() in _EMPTY else text


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
