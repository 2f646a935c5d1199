"""Which jobs of a bundle a command names: exact names or shell-style globs (`lr_*`), and
`--stage`. A name that is not a job, or a glob that matches none, is a user error."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .errors import ReconcileError
from .model import LockJob

GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


def select_jobs(
    jobs: Sequence[LockJob], patterns: Sequence[str], stages: Sequence[str] = ()
) -> list[LockJob]:
    """The jobs that `patterns` name (all of them when there are none), in bundle order,
    limited to `stages` when given. Raises ReconcileError naming what matched nothing."""
    names = [job.name for job in jobs]
    missing = [
        pattern
        for pattern in patterns
        if not (fnmatch.filter(names, pattern) if is_glob(pattern) else pattern in names)
    ]
    if missing:
        kinds = ", ".join(missing)
        raise ReconcileError(
            f"no job named {kinds} in this bundle",
            hint="`oellm status BUNDLE` lists its jobs; quote a glob so the shell leaves it alone",
        )
    chosen = [
        job
        for job in jobs
        if not patterns
        or any(fnmatch.fnmatchcase(job.name, p) if is_glob(p) else job.name == p for p in patterns)
    ]
    if stages:
        known = {job.stage for job in jobs}
        unknown = [stage for stage in stages if stage not in known]
        if unknown:
            raise ReconcileError(
                f"no stage {', '.join(unknown)} in this bundle",
                hint="stages: " + ", ".join(sorted(s or "-" for s in known)),
            )
        chosen = [job for job in chosen if job.stage in stages]
    return chosen
