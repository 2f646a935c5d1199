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


def make_job_folders(bundle: Bundle, job: LockJob) -> list[Path]:
    """Create the folders `job` needs; return those that did not exist before (none on a second
    call). A folder that cannot be made is a ReconcileError naming it."""
    created: list[Path] = []
    for folder in job_folders(bundle, job):
        if folder.is_dir():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReconcileError(
                f"cannot create the folder of job {job.name}: {exc.strerror or exc}",
                str(folder),
                hint="check that its parent exists, is a folder and is writable, or change "
                "the job's output_dir/log_path in the config and recompile",
            ) from None
        if folder not in created:
            created.append(folder)
    return created
