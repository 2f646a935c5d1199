"""How `compile --check` should read a bundle's files to compare them: the CPU time of reading
and comparing every script and config of a 10,000-job bundle, one way of reading at a time.

    python benchmarks/check_read_bench.py             # tmpfs and disk, the median of 7 rounds
    python benchmarks/check_read_bench.py --rounds 3

CPU time (user + system) of this process, not wall time: a shared machine's wall times are
noisy, and every way reads the same files from the page cache. `compiler/checking.py` reads
with os.open/os.read and no fstat (the listing tells regular files apart).
"""

from __future__ import annotations

import argparse
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from compile_bench import grid

NONBLOCK = os.O_RDONLY | os.O_NONBLOCK


def path_read_bytes(root: str, files: dict[str, bytes]) -> bool:
    return all(Path(root + name).read_bytes() == data for name, data in files.items())


def open_read(root: str, files: dict[str, bytes]) -> bool:
    same = True
    for name, data in files.items():
        fd = os.open(root + name, NONBLOCK)
        try:
            same &= os.read(fd, len(data) + 1) == data
        finally:
            os.close(fd)
    return same


def open_fstat_read(root: str, files: dict[str, bytes]) -> bool:
    same = True
    for name, data in files.items():
        fd = os.open(root + name, NONBLOCK)
        try:
            found = os.fstat(fd)
            same &= (
                stat.S_ISREG(found.st_mode)
                and found.st_size == len(data)
                and os.read(fd, len(data) + 1) == data
            )
        finally:
            os.close(fd)
    return same


def stat_first(root: str, files: dict[str, bytes]) -> bool:
    """The size compared before the file is opened."""
    same = True
    for name, data in files.items():
        if os.stat(root + name).st_size != len(data):
            same = False
            continue
        fd = os.open(root + name, NONBLOCK)
        try:
            same &= os.read(fd, len(data) + 1) == data
        finally:
            os.close(fd)
    return same


WAYS: list[Callable[[str, dict[str, bytes]], bool]] = [
    path_read_bytes,
    open_read,
    open_fstat_read,
    stat_first,
]


def measure(where: Path, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(grid(100, 100))
        bundle = Path(tmp) / "bundle"
        command = [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(bundle)]
        subprocess.run(command, check=True, capture_output=True)
        root = str(bundle) + "/"
        names = sorted(f"jobs/{name}" for name in os.listdir(bundle / "jobs"))
        files = {name: (bundle / name).read_bytes() for name in names}
        times: dict[str, list[float]] = {way.__name__: [] for way in WAYS}
        for _ in range(rounds):
            for way in WAYS:
                start = time.process_time()
                assert way(root, files)
                times[way.__name__].append(time.process_time() - start)
        return {name: statistics.median(found) for name, found in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, metavar="N")
    args = parser.parse_args()
    tmpfs = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    disk = Path(os.environ.get("OELLM_BENCH_DISK", tempfile.gettempdir()))
    for label, where in (("tmpfs", tmpfs), ("disk", disk)):
        for name, seconds in measure(where, max(1, args.rounds)).items():
            print(f"{label:<5} {name:<16} {seconds * 1000:7.1f} ms CPU for 20,000 files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
