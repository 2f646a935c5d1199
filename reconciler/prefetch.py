"""The sacct of a round, started before the round has read its bundle and records (issue 15).

A round asks sacct back from the oldest attempt it has in flight (`observe.accounting_since`),
which it knows only once it has read the records; slurmdbd's answer is the slowest part of a
round that has nothing to do. So the round that last asked keeps that moment in the state dir
(`SINCE_NAME`), and the next round starts the same sacct as soon as it knows where the state
dir is, before it reads the bundle and the records; its own query takes that answer only if it
asks the very same (`schedulers/early.py`). The file is a cache: lost, damaged or stale, it
costs a query asked anew, never a different answer.
"""

from __future__ import annotations

import contextlib
import os
import stat
from datetime import datetime
from pathlib import Path

from oellm.lockfile import fastread

from .bundle import state_folder
from .record_file import write_bytes_atomic
from .schedulers.slurm import SlurmScheduler

SINCE_NAME = "sacct.since"


def start(bundle_path: Path, lock_data: bytes, scheduler: SlurmScheduler) -> str | None:
    """Start the sacct the last round asked, for the state dir the lockfile bytes name (read
    unchecked: the answer is used only for the query the round makes once it has read them).
    Returns that state dir as the lockfile names it (for `load_bundle`), if it names one."""
    state_dir = fastread.state_dir(lock_data)
    if state_dir is None:
        return None
    since = read_since(state_folder(bundle_path, state_dir))
    if since is not None:
        scheduler.prefetch(since)
    return state_dir


def read_since(state: Path) -> datetime | None:
    """The moment the last round asked sacct from; None when it asked none, or unknown."""
    try:
        # Without blocking, and a regular file only: a FIFO put there must not hang a round.
        fd = os.open(state / SINCE_NAME, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = os.read(fd, 256).decode("ascii")
        finally:
            os.close(fd)
        moment = datetime.fromisoformat(text.strip())
    except (OSError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def remember_since(state: Path, since: datetime | None) -> None:
    """Keep the moment this round asked sacct from (None: it asked none, and the next round
    starts none early); written only when it changed, so a round with nothing to do writes
    nothing. The lock holder's, after its query."""
    if read_since(state) == since:
        return
    path = state / SINCE_NAME
    with contextlib.suppress(OSError):
        if since is None:
            path.unlink(missing_ok=True)
        else:
            write_bytes_atomic(path, f"{since.isoformat()}\n".encode(), durable=False)
