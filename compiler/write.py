"""Write a bundle atomically: build it in a temporary sibling folder, then swap it in.

An existing bundle is replaced only once the new one is complete; a folder that is not a
bundle is never replaced. Durable without one fsync per file: every file is written, the
staging folder's file system is synced once, then the folders are swapped and the swap synced.
A file that a recompile leaves unchanged is not written again: the new bundle links the old
file.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import fail
from .pipeline import CompiledBundle

LOCK_NAME = "plan.lock.json"


def write_bundle(bundle: CompiledBundle, out: Path) -> None:
    out = out.absolute()
    if out.exists():
        if not out.is_dir():
            raise fail(f"'{out}' exists and is not a folder")
        if any(out.iterdir()) and not (out / LOCK_NAME).is_file():
            raise fail(
                f"'{out}' is not empty and holds no {LOCK_NAME}: refusing to replace it",
                hint="choose a new folder for the bundle, or empty this one",
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out if (out / LOCK_NAME).is_file() else None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        folders: set[str] = set()
        for name, data in sorted(bundle.files.items()):
            folder, _, _ = name.rpartition("/")
            if folder and folder not in folders:
                (staging / folder).mkdir(parents=True, exist_ok=True)
                folders.add(folder)
            target = staging / name
            if previous is None or not _link_if_same(previous / name, target, data):
                _write(target, data, 0o755 if name.endswith(".sbatch") else None)
        staging.chmod(0o755)
        _sync_file_system(staging)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, retired / out.name)
            os.rename(staging, out)
            _sync_folder(out.parent)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out)
            _sync_folder(out.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write(target: Path, data: bytes, mode: int | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _link_if_same(old: Path, target: Path, data: bytes) -> bool:
    """Link the old bundle's file when it holds exactly `data` (a recompile that changed
    nothing writes nothing). The old file is never written to afterwards: bundles are only
    ever replaced whole."""
    try:
        if old.stat().st_size != len(data) or old.read_bytes() != data:
            return False
        os.link(old, target)
    except OSError:
        return False  # gone, unreadable, or a file system without hard links: write it
    return True


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """syncfs(2) from the C library the interpreter runs on (Linux), or None."""
    try:
        found: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "syncfs", None)
    except OSError:
        return None
    return found


def _sync_file_system(folder: Path) -> None:
    """Flush every file written under `folder` to disk: one syncfs(2) of its file system where
    the C library has it (Linux), else sync(2)."""
    syncfs = _syncfs()
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
