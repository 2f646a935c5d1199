"""Where a job's logs and start/end markers are, per SLURM job (an attempt, a chain's link, an
array task), and reading their last lines: for `oellm status` and `oellm logs`. Read-only."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .arrays import current_for_index, log_for
from .bundle import Bundle
from .model import Attempt, LockJob

TAIL_BYTES = 64 * 1024  # enough for the last lines of any log; never read a whole one


@dataclass(frozen=True)
class Run:
    """One SLURM job of an attempt: link 0 is a plain job, 1.. a chain's links."""

    attempt: int
    link: int
    job_id: str
    log: Path


def runs(bundle: Bundle, job: LockJob, attempt: Attempt) -> list[Run]:
    """Every SLURM job the attempt started, in order (a chain: each link's newest record)."""
    if attempt.links:
        newest = {link.link: link for link in attempt.links if link.job_id}
        return [
            Run(attempt.attempt, n, job_id, log_file(bundle, job, job_id))
            for n in sorted(newest)
            if (job_id := newest[n].job_id) is not None
        ]
    if attempt.job_id is None:
        return []
    return [Run(attempt.attempt, 0, attempt.job_id, log_file(bundle, job, attempt.job_id))]


def log_file(bundle: Bundle, job: LockJob, job_id: str) -> Path:
    return bundle.resolve(log_for(job.log_path, job_id, job.array_index))


def current_link(bundle: Bundle, job: LockJob) -> Path | None:
    """The `log_path_current` link of the job (an array member's own `current_<i>.log`)."""
    if not job.log_path_current:
        return None
    current = job.log_path_current
    if job.array_index is not None:
        current = current_for_index(current, job.array_index)
    return bundle.resolve(current)


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a file (none when it cannot be read)."""
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").rstrip("\n")
    return text.splitlines()[-lines:] if text else []


@dataclass(frozen=True)
class Times:
    started: datetime | None
    ended: datetime | None


def marker_times(bundle: Bundle, job: LockJob, job_id: str) -> Times:
    """When the job's script started (the time it wrote into its `.started` marker) and
    ended (when it wrote its `.exit` marker)."""
    folder = bundle.resolve(job.output_dir) / ".oellm"
    started = ended = None
    with contextlib.suppress(OSError):
        started = _parse((folder / f"{job_id}.started").read_text().strip())
    try:
        mtime = (folder / f"{job_id}.exit").stat().st_mtime
        ended = datetime.fromtimestamp(mtime, timezone.utc)
    except OSError:
        pass
    return Times(started, ended)


def _parse(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
