"""Write a bundle atomically: build it in a temporary sibling folder, then swap it in.

An existing bundle is replaced only once the new one is complete; a folder that is not a
bundle is never replaced. Durable without one fsync per file: every file is written, the
staging folder's file system is synced once, then the folders are swapped and the swap synced.
`oellm compile` stages files while it compiles (`stage`); a bundle compiled in memory is
staged here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from oellm import filesync
from oellm.bundle_files import LOCK_NAME
from oellm.stopping import signals_held

from .errors import fail
from .pipeline import CompiledBundle
from .staging import StagedFiles


def stage(out: Path) -> StagedFiles:
    """An empty staging folder beside `out`, after checking that `out` may be replaced."""
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
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    previous = out if (out / LOCK_NAME).is_file() else None
    return StagedFiles(folder, out, previous)


def write_bundle(
    bundle: CompiledBundle, out: Path, with_swap: Callable[[], object] | None = None
) -> None:
    """Write the bundle's files to `out`, replacing what is there at once. `with_swap` runs
    right before the swap, in the same stretch that signals wait for (a state dir that moves
    with the bundle: stopped in between, the old bundle would point at a moved state)."""
    files = bundle.files
    if isinstance(files, StagedFiles) and files.target == out.absolute():
        _swap_in(files, with_swap)
        return
    with stage(out) as staged:
        for name, data in sorted(files.items()):
            staged[name] = data
        _swap_in(staged, with_swap)


def _swap_in(staged: StagedFiles, with_swap: Callable[[], object] | None = None) -> None:
    out, folder = staged.target, staged.folder
    folder.chmod(0o755)
    filesync.sync_file_system(folder)
    # Stopped between the two renames, the bundle would be in neither place; stopped after
    # them, the old bundle would stay behind in `retired`. A signal meanwhile acts after.
    with signals_held():
        if with_swap is not None:
            with_swap()
        if not out.exists():
            os.rename(folder, out)
            _sync_folder(out.parent)
            return
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, retired / out.name)
        try:
            os.rename(folder, out)
        except OSError:
            os.rename(retired / out.name, out)  # the old bundle back where it was
            retired.rmdir()
            raise
        _sync_folder(out.parent)
        shutil.rmtree(retired, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
