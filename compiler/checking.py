"""`oellm compile --check`: each file of the bundle compared with the bundle folder on disk as
the compiler makes it. Nothing is written; a bundle that is up to date is read once, a file
at a time, and never held in memory.

Once one file differs, the bundle is stale: the files made after it are kept as made, not
compared, and `diff.compare` of the two whole bundles tells how they differ, as it always has.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from .errors import fail
from .staging import FileSink


class CheckedFiles(FileSink):
    """File name (relative, with '/') -> bytes, compared with `folder` as each one is made."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._root = os.fspath(folder) + "/"
        # Every file made, in order; those not kept are held by the folder byte for byte.
        self._names: dict[str, None] = {}
        self._kept: dict[str, bytes] = {}  # made and kept: it differs, or was not compared
        self._differ: set[str] = set()  # kept because it differs from the folder's file

    def part(self) -> None:
        self._names = {}
        self._kept = {}
        self._differ = set()

    def report(self) -> Any:
        return list(self._names), self._kept, self._differ

    def adopt(self, report: Any) -> None:
        names, kept, differ = report
        for name in names:
            self._names[name] = None
        self._kept.update(kept)
        self._differ.update(differ)

    def same(self, name: str) -> bool:
        """Whether `name` was made and the folder holds it byte for byte."""
        return name in self._names and name not in self._kept

    def __setitem__(self, name: str, data: bytes) -> None:
        if name in self._names:
            self._forget(name)
        self._names[name] = None
        if self._differ:
            self._kept[name] = data
        elif not _agrees(self._root + name, data):
            self._kept[name] = data
            self._differ.add(name)

    @contextlib.contextmanager
    def text(self, name: str) -> Iterator[_Pieces]:
        self._forget(name)
        pieces = _Pieces(None if self._differ else self._root + name)
        try:
            yield pieces
            made = pieces.made()
        finally:
            pieces.close()
        self._names[name] = None
        if made is not None:
            self._kept[name] = made
            if pieces.compared:
                self._differ.add(name)

    def __getitem__(self, name: str) -> bytes:
        if name in self._kept:
            return self._kept[name]
        if name not in self._names:
            raise KeyError(name)
        return self._read_same(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._forget(name)

    def up_to_date(self, listed: Collection[str]) -> bool:
        """Whether the folder, whose regular files are `listed` (`folder_files`), holds
        exactly the files made, byte for byte."""
        if self._differ:
            return False
        # Files kept without a comparison: a file that differed was made again since.
        for name, data in list(self._kept.items()):
            if not _agrees(self._root + name, data):
                self._differ.add(name)
                return False
            del self._kept[name]
        return len(listed) == len(self._names) and all(name in self._names for name in listed)

    def bundles(self, listed: Collection[str]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The folder's files (those `listed`) and the files made, each by name, for
        `diff.compare`. A file the folder held when it was made is read once, for both."""
        current = {name: _read(self._root + name) for name in sorted(listed)}
        made: dict[str, bytes] = {}
        for name in self._names:
            data = self._kept.get(name)
            if data is None:
                data = current.get(name)  # the folder held it when it was made
            if data is None:
                # Not listed: reached through a link to a folder, which a listing does not
                # follow (nor does `oellm diff`).
                data = self._read_same(name)
            made[name] = data
        return current, made

    def _read_same(self, name: str) -> bytes:
        """A file made that the folder held: the folder's bytes are the ones made."""
        path = self._root + name
        try:
            return _read(path)
        except OSError as error:
            raise fail(
                f"'{path}' changed while it was checked: {error.strerror}",
                hint="run the check again",
            ) from None

    def _forget(self, name: str) -> None:
        self._names.pop(name, None)
        self._kept.pop(name, None)
        self._differ.discard(name)


class _Pieces:
    """A file's text given in pieces, compared as it comes with the file at `path` (None: kept
    without a comparison). Keeps nothing while the two agree."""

    def __init__(self, path: str | None) -> None:
        self.compared = path is not None
        self._fd = -1 if path is None else _open_regular(path)
        self._agreed = 0  # bytes given so far that the file holds too
        # The text given, once it differs from the file's (or when nothing is compared).
        self._kept: list[bytes] | None = None if self._fd >= 0 else []

    def write(self, text: str, /) -> int:
        data = text.encode("utf-8")
        if self._kept is None:
            if _read_exactly(self._fd, len(data)) == data:
                self._agreed += len(data)
                return len(text)
            self._kept = [self._prefix()]
        self._kept.append(data)
        return len(text)

    def made(self) -> bytes | None:
        """None when the file holds exactly the text given, else that text."""
        if self._kept is None:
            if os.read(self._fd, 1) == b"":
                return None
            self._kept = [self._prefix()]
        return b"".join(self._kept)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _prefix(self) -> bytes:
        """The text given before the first difference: the file holds the same bytes."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        return _read_exactly(self._fd, self._agreed)


def folder_files(folder: Path) -> list[str]:
    """The relative names ('/' separators) of the regular files under `folder`, links to files
    included; links to folders are not followed, and a folder that cannot be listed is
    skipped (as `os.walk` does). Empty when `folder` is missing."""
    found: list[str] = []
    pending = [""]
    root = os.fspath(folder) + "/"
    while pending:
        prefix = pending.pop()
        try:
            entries = list(os.scandir(root + prefix))
        except OSError:
            continue
        for entry in entries:
            if _is(entry.is_dir):
                if not _is(entry.is_symlink):
                    pending.append(prefix + entry.name + "/")
            elif _is(entry.is_file):
                found.append(prefix + entry.name)
    return found


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder` (as `folder_files` lists them), by name."""
    root = os.fspath(folder) + "/"
    return {name: _read(root + name) for name in sorted(folder_files(folder))}


def _is(test: Callable[[], bool]) -> bool:
    """A DirEntry test, False when the entry cannot be examined (as os.walk takes it)."""
    try:
        return test()
    except OSError:
        return False


def _agrees(path: str, data: bytes) -> bool:
    """Whether the file at `path` holds exactly `data`: one byte more is asked for, which
    tells a longer file apart (a regular file is read short only at its end). Whether it is
    a regular file at all is the listing's to tell (`up_to_date`): no fstat, one system call
    less for each file of a sweep. Opened without blocking: a FIFO must not hang the check."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(data) + 1) == data
    except OSError:
        return False  # a folder, say
    finally:
        os.close(fd)


def _open_regular(path: str) -> int:
    """A descriptor to read the regular file at `path`, or -1 (missing, not a regular file,
    unreadable). Opened without blocking: a FIFO there must not hang the check."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return -1
    return fd


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes, or fewer at the end of the file."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    left = size - len(data)
    while left:
        more = os.read(fd, left)
        if not more:
            break
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


def _read(path: str) -> bytes:
    """The whole file (one read when its size holds still)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(fd, os.fstat(fd).st_size + 1)
        if not data:
            return data
        parts = [data]
        while more := os.read(fd, 1 << 16):
            parts.append(more)
        return b"".join(parts) if len(parts) > 1 else data
    finally:
        os.close(fd)
