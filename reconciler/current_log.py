"""`log_path_current`: a symlink that follows a job's newest log, so tools can tail one
stable name. Repointed when an attempt is submitted, as a chain moves on to its next link, and
per task for arrays (`current_<index>.log`).
"""

from __future__ import annotations

import os

from .arrays import current_for_index, log_for, split_task_id
from .bundle import Bundle
from .model import LockJob


def point_current_log(bundle: Bundle, job: LockJob, job_id: str) -> None:
    """Point `log_path_current` at this job's log, so tools can follow one stable name (in a
    chain, the link that runs now; for an array task, `current_<index>.log`)."""
    if not job.log_path_current:
        return
    target = bundle.resolve(log_for(job.log_path, job_id, job.array_index))
    _, index = split_task_id(job_id)
    index = job.array_index if index is None else index
    current = job.log_path_current
    link = bundle.resolve(current if index is None else current_for_index(current, index))
    relative = os.path.relpath(target, link.parent)
    tmp = link.with_name(f".{link.name}.{job_id}")
    try:
        if os.readlink(link) == relative:
            return
    except OSError:
        pass  # not there yet, or not a link
    try:
        try:
            os.symlink(relative, tmp)
        except FileExistsError:  # left by a round killed in between
            tmp.unlink()
            os.symlink(relative, tmp)
        os.replace(tmp, link)
    except OSError:
        pass  # a convenience link; never worth failing a submission for
