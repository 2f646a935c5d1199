"""A file of the reconciler's state on the shared filesystem, written atomically (temp file,
fsync, rename; many at once with two syncs of the file system), so a run killed at any instant
leaves either the old file or the new one, never half of one; created exclusively when asked
(RecordExists); and read strictly (`codec_quick.loads`): a record that does not check out is a
ReconcileError naming its file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from oellm import filesync

from .codec import RecordInvalid, dump
from .codec_quick import loads
from .errors import ReconcileError

log = logging.getLogger("oellm.records")  # DEBUG: each state record read and written
T = TypeVar("T")


class RecordExists(Exception):
    """An intent record that another round already wrote: this round must not submit."""


def write_atomic(path: Path, data: Any, exclusive: bool = False, durable: bool = True) -> None:
    """Write `data` (a record dataclass, or a mapping) as JSON to `path` at once (temp file,
    fsync, rename). `exclusive`: create it only if no file is there (a hard link, which fails
    when the name exists, also on NFS and Lustre), else RecordExists. Not `durable`: no fsync;
    the caller syncs the file system once for many files."""
    write_bytes_atomic(path, dump(data), exclusive, durable)


def write_bytes_atomic(
    path: Path, data: bytes, exclusive: bool = False, durable: bool = True
) -> None:
    """`write_atomic` for bytes."""
    if exclusive:  # a new record: most often in a folder still to make
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    else:
        fd, tmp = _temp_beside(path)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RecordExists(str(path)) from None
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_folder(path.parent)
    log.debug("wrote %s", path)


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in `path`'s folder, opened for writing, and its name. The folder
    is made only when it is missing: most writes rewrite a record in its job's folder, and
    each call is a round trip to a parallel file system's metadata server."""
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """`data` written to the open file `fd`: straight to the descriptor, without the buffered
    file object's own calls (an ioctl and seeks per file, thousands in a round)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a rename or a new file in it)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_many_atomic(items: Sequence[tuple[Path, Any]], file_system: Path) -> None:
    """`write_atomic` for many files at once, each `(path, data)`: each written to a temp file,
    the file system `file_system` is on synced once, every temp file renamed into place, synced
    once more. A file is either its old or its new content after a crash, as with
    `write_atomic`, but there are two syncs in all, not two fsyncs per file."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            fd, tmp = _temp_beside(path)
            staged.append((tmp, path))
            try:
                _write_all(fd, dump(data))
            finally:
                os.close(fd)
        # Every new content is on disk before any name points to it.
        filesync.sync_file_system(file_system)
        while staged:
            tmp, path = staged[-1]
            os.replace(tmp, path)
            staged.pop()
        filesync.sync_file_system(file_system)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    log.debug("wrote %d records", len(items))


DAMAGED_HINT = (
    "its job is left alone until this is mended; if the file is beyond repair, move it "
    "aside: the next round looks that attempt up in SLURM by its tag and adopts what it "
    "finds there rather than submitting again"
)


def read(path: str | Path, kind: type[T]) -> T:
    """The record of type `kind` in the file at `path`; a ReconcileError (with DAMAGED_HINT)
    when it cannot be read or does not check out."""
    try:
        record = loads(kind, _read_bytes(path))
    except OSError as exc:
        raise ReconcileError(
            f"cannot read the state record: {exc.strerror}", str(path), hint=DAMAGED_HINT
        ) from None
    except RecordInvalid as exc:
        raise ReconcileError(f"damaged state record: {exc}", str(path), hint=DAMAGED_HINT) from None
    except ValueError as exc:
        raise ReconcileError(
            f"damaged state record (not JSON: {exc})", str(path), hint=DAMAGED_HINT
        ) from None
    except RecursionError:
        raise ReconcileError(
            "damaged state record (nested too deeply)", str(path), hint=DAMAGED_HINT
        ) from None
    log.debug("read %s", path)
    return record


def read_first(paths: Sequence[str], kind: type[T]) -> tuple[T, str]:
    """The record at the first of `paths` that still exists (a settling round may have moved
    it to the next one since the folder was listed)."""
    for path in paths[:-1]:
        try:
            return read(path, kind), path
        except ReconcileError:
            if os.path.exists(path):
                raise
    return read(paths[-1], kind), paths[-1]


def _read_bytes(path: str | Path) -> bytes:
    """The whole file: an open, a read and the read that finds its end (no fstat, no buffer:
    a round reads one record per job in flight, and on a parallel file system each call may
    be a trip to its servers)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _CHUNK)
        if not data:
            return data
        parts = [data]
        while more := os.read(fd, _CHUNK):
            parts.append(more)
        return data if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


_CHUNK = 1 << 16  # a record is about 1 KB; one with a long ledger of events may be more
