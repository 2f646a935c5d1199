"""SLURM job arrays: the names SLURM gives array tasks, and the per-task pieces the reconciler
needs for `slurm.array: true` (anchors 3.6): task ids, log paths, a `current_<index>.log` link
per task, and `--array` specs for a group or for one task submitted again.

An array task is `<array job id>_<index>` in squeue and sacct; it also has a plain job id of
its own (SLURM_JOB_ID inside the task), which is what `%j` expands to. Only `%A_%a` names a
task's log from outside, so array log paths must use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TASK = re.compile(r"(\d+)_(\d+)")
# squeue without -r folds an array's pending tasks into one row: `7_[0-3,5%2]`.
_FOLDED = re.compile(r"(\d+)_\[([0-9,:\-]+)(?:%\d+)?\]")
_SPEC_PART = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def split_task_id(job_id: str) -> tuple[str, int | None]:
    """`123_4` -> ("123", 4); a plain `123` -> ("123", None). A folded row is not one task."""
    found = _TASK.fullmatch(job_id)
    if found:
        return found.group(1), int(found.group(2))
    if job_id.isdigit():
        return job_id, None
    raise ValueError(f"not a job or array task id: {job_id!r}")


def task_id(array_job_id: str, index: int) -> str:
    return f"{array_job_id}_{index}"


def expand_task_ids(job_id: str) -> list[str]:
    """Every task a squeue id names: `7_[0-3,5%2]` -> 7_0 .. 7_3, 7_5; other ids as they are."""
    found = _FOLDED.fullmatch(job_id)
    if not found:
        if "[" in job_id:
            # A list cut short (SLURM_BITSTR_LEN unset, say): its missing tasks are unknown.
            raise ValueError(f"not a whole array id: {job_id!r}")
        return [job_id]
    base = found.group(1)
    return [task_id(base, index) for index in parse_indices(found.group(2))]


def parse_indices(spec: str) -> list[int]:
    """The indices of an --array spec without its throttle: `0-3,5`, `1-7:2`."""
    indices: list[int] = []
    for part in spec.split(","):
        found = _SPEC_PART.fullmatch(part.strip())
        if not found:
            raise ValueError(f"not an --array spec: {spec!r}")
        first = int(found.group(1))
        last = int(found.group(2)) if found.group(2) else first
        step = int(found.group(3)) if found.group(3) else 1
        if last < first or step < 1:
            raise ValueError(f"not an --array spec: {spec!r}")
        indices.extend(range(first, last + 1, step))
    return indices


def array_spec(indices: Iterable[int], throttle: int | None = None) -> str:
    """The --array value for these indices, runs folded into ranges: [0,1,2,3,7] -> `0-3,7`,
    with `%N` when at most N tasks may run at once."""
    ordered = sorted(set(indices))
    if not ordered:
        raise ValueError("an array needs at least one index")
    parts: list[str] = []
    start = previous = ordered[0]
    for index in [*ordered[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    return ",".join(parts) + (f"%{throttle}" if throttle else "")


def resubmit_args(index: int) -> tuple[str, ...]:
    """sbatch options that run one task of an array again, as a new one-task array with the
    same index: the script still reads its own job from SLURM_ARRAY_TASK_ID."""
    return (f"--array={index}",)


def log_for(log_path: str, job_id: str, index: int | None = None) -> str:
    """The log of one job: `%j` and `%A` are its id; for an array task `123_4`, `%A` is 123
    and `%a` is 4 (`%j`, the task's own job id, is not known outside the task). `index`: the
    array index of a member that a scheduler without arrays ran as a plain job."""
    base, task = split_task_id(job_id) if _TASK.fullmatch(job_id) else (job_id, None)
    if task is None:
        plain = log_path.replace("%j", job_id).replace("%A", job_id)
        return plain if index is None else plain.replace("%a", str(index))
    return log_path.replace("%A", base).replace("%a", str(task))


def current_for_index(current: str, index: int) -> str:
    """Each task's own `log_path_current`: `run/current.log` -> `run/current_4.log`."""
    head, slash, name = current.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    named = f"{stem}_{index}.{suffix}" if dot and stem else f"{name}_{index}"
    return f"{head}{slash}{named}"


def whole_arrays(job_ids: Iterable[str], live: Iterable[str]) -> list[str]:
    """`job_ids` to cancel, each array named by its array job id when every task of it that
    is still `live` is among them (one `7` rather than ten thousand `7_<index>`); the tasks
    of an array cancelled only in part stay named one by one. Order kept, each id once."""
    wanted = list(dict.fromkeys(job_ids))
    chosen = set(wanted)
    spared: set[str] = set()  # arrays with a live task that is not to be cancelled
    for job_id in live:
        array, index = _split(job_id)
        if index is not None and job_id not in chosen:
            spared.add(array)
    result: dict[str, None] = {}  # ordered, each id once
    for job_id in wanted:
        array, index = _split(job_id)
        result[array if index is not None and array not in spared else job_id] = None
    return list(result)


def _split(job_id: str) -> tuple[str, int | None]:
    try:
        return split_task_id(job_id)
    except ValueError:
        return job_id, None
