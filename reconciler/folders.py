"""The folders a job needs before SLURM starts it: the folder of its log and its output dir.

SLURM opens `--output` before the script runs and does not create its folder, so a job whose
log folder is missing fails at once (exit 0:53) and leaves no log. The reconciler makes them
before each submission; `oellm prepare` makes them for a bundle submitted by hand.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import Bundle
from .errors import ReconcileError
from .model import LockJob


def job_folders(bundle: Bundle, job: LockJob) -> tuple[Path, ...]:
    """The folders `job` writes into, resolved as the bundle resolves paths (relative to the
    folder that holds the bundle)."""
    return (bundle.resolve(job.log_path).parent, bundle.resolve(job.output_dir))


def make_job_folders(bundle: Bundle, job: LockJob, known: set[Path] | None = None) -> list[Path]:
    """Create the folders `job` needs; return those that did not exist before (none on a second
    call). A folder that cannot be made is a ReconcileError naming it. `known`: folders seen
    to exist already (skipped, and those of `job` added): a round submitting 10,000 jobs
    that log into one folder asks the file system about it once, not 10,000 times."""
    created: list[Path] = []
    # Once each: a job's log is in its output dir by default.
    for folder in dict.fromkeys(job_folders(bundle, job)):
        if known is not None and folder in known:
            continue
        try:
            # Made at once, not looked up first: most jobs submitted have a folder of their own
            # that is not there yet, and each call is a round trip to a parallel file system's
            # metadata server.
            folder.mkdir(parents=True)
        except OSError as exc:
            # There already (some file systems refuse a folder that exists with EACCES or
            # EROFS rather than EEXIST): nothing to make.
            if not folder.is_dir():
                raise _unmade(job, folder, exc.strerror or str(exc)) from None
        else:
            created.append(folder)
        if known is not None:
            known.add(folder)
    return created


def _unmade(job: LockJob, folder: Path, why: str) -> ReconcileError:
    return ReconcileError(
        f"cannot create the folder of job {job.name}: {why}",
        str(folder),
        hint="check that its parent exists, is a folder and is writable, or change "
        "the job's output_dir/log_path in the config and recompile",
    )
