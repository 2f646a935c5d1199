"""The reconcile benchmark's table (`reconcile_bench.py`): one row per case, with the SLURM
commands a round ran and the file system calls `strace -c` counted, printed plain or as the
README's markdown table.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from collections.abc import Sequence

# The file system calls the strace count reports, and the syscalls each one sums.
FS_CALLS = {
    "openat": ("openat", "open"),
    "stat": ("newfstatat", "stat", "lstat", "fstat", "statx"),
    "getdents": ("getdents64",),
    "read": ("read",),
    "write": ("write",),
    "fsync": ("fsync", "fdatasync"),
    # Calls that change a folder's names: each a write on a parallel file system's metadata
    # server (a no-op round makes none; a submission makes its records and folders).
    "names": (
        "mkdir",
        "rename",
        "renameat",
        "renameat2",
        "link",
        "linkat",
        "unlink",
        "unlinkat",
        "symlink",
        "symlinkat",
    ),
}


@dataclasses.dataclass
class Row:
    case: str
    jobs: str
    seconds: list[float]
    calls: str
    fs: dict[str, int] | None = None

    def wall(self) -> str:
        if not self.seconds:
            return ""
        median = statistics.median(self.seconds)
        spread = (
            f" ({min(self.seconds):.2f}–{max(self.seconds):.2f})" if len(self.seconds) > 1 else ""
        )
        return f"{median:.2f} s{spread}"


def describe(calls: collections.Counter[str]) -> str:
    return " + ".join(f"{n:,} `{tool}`" for tool, n in sorted(calls.items())) or "none"


def plain(rows: Sequence[Row]) -> str:
    lines = []
    for row in rows:
        lines.append(f"{row.case}: {row.wall()}; SLURM: {row.calls}")
        if row.fs:
            lines.append(
                "  file system calls: " + ", ".join(f"{k} {v:,}" for k, v in row.fs.items())
            )
    return "\n".join(lines)


def markdown(rows: Sequence[Row]) -> str:
    names = list(FS_CALLS)
    head = ["case", "jobs", "wall (median)", "SLURM calls", *names, "all traced"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        fs = [f"{row.fs[n]:,}" for n in [*names, "total"]] if row.fs else [""] * (len(names) + 1)
        lines.append("| " + " | ".join([row.case, row.jobs, row.wall(), row.calls, *fs]) + " |")
    return "\n".join(lines)
