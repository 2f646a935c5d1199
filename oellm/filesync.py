"""Making many files durable at once: one sync of the file system they are on.

`syncfs(2)` flushes that one file system, where `sync(2)` (`os.sync`) would flush every file
system of the machine and every other process's writes too: on a shared login node, other
users' work. Used by the compile's write phase and by the records a round writes in a batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """syncfs(2) from the C library the interpreter runs on (Linux), or None."""
    import ctypes  # here: only a write of many files needs it

    try:
        found: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "syncfs", None)
    except OSError:
        return None
    return found


def sync_file_system(folder: Path) -> None:
    """Flush every file written under `folder` to disk: one syncfs(2) of its file system where
    the C library has it (Linux), else sync(2)."""
    syncfs = _syncfs()
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
