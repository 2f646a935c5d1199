"""A bundle's files written to their staging folder as the compiler produces them, so that a
large sweep never holds every script in memory (`oellm compile`; `write.py` swaps the folder
in once the bundle is complete).

A file that the bundle being replaced already holds byte for byte is linked from it, not
written again. Nothing is synced here: `write.py` syncs the folder's file system once.
`FileSink` is what the compiler puts files into instead of a dict: this staging folder, or
the comparison with the bundle on disk of `compile --check` (`checking.py`).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TextIO

from oellm.stopping import signals_held


class Writer(Protocol):
    """What `FileSink.text` gives: text is written to it in pieces."""

    def write(self, text: str, /) -> object: ...


class FileSink(MutableMapping[str, bytes], abc.ABC):
    """File name (relative, with '/') -> bytes, taken as the compiler makes each file. The
    names made are kept in `_names`, in the order made; the bytes wherever a sink keeps them."""

    _names: dict[str, None]

    @abc.abstractmethod
    def text(self, name: str) -> contextlib.AbstractContextManager[Writer]:
        """A file to give in pieces of text (a large lockfile is never one string in
        memory)."""

    def part(self) -> None:
        """In a worker process (`fanout.py`): from now on, `report` tells the files this
        process makes."""
        self._names = {}

    def report(self) -> Any:
        """What `adopt` takes in the parent process: the files made since `part`."""
        return list(self._names)

    def adopt(self, report: Any) -> None:
        """Take in the files a worker process made (its `report`), after those made so far."""
        for name in report:
            self._names[name] = None

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class StagedFiles(FileSink):
    """File name (relative, with '/') -> bytes, kept in `folder` rather than in memory.

    A context manager: leaving it removes the folder unless it was swapped in meanwhile."""

    def __init__(self, folder: Path, target: Path, previous: Path | None) -> None:
        self.folder = folder
        self.target = target  # the bundle folder this staging folder becomes
        self._previous = previous  # the bundle being replaced, if any
        self._names: dict[str, None] = {}
        self._made: set[str] = set()
        # Text paths: a sweep stages thousands of files, and a Path per file costs more than
        # writing a small one.
        self._root = str(folder) + "/"
        self._old = None if previous is None else str(previous) + "/"
        self._exact = _umask() & 0o755 == 0  # files are created with the mode asked for

    def __setitem__(self, name: str, data: bytes) -> None:
        path = self._text_path(name)
        if name in self._names:
            # A new staging folder holds only what was staged into it (gone already if
            # another process of the compile staged a job of the same name meanwhile).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._old is None or not _link_if_same(self._old + name, path, data):
            script = name.endswith(".sbatch")
            mode = 0o755 if script else 0o644
            fd = _create(path, mode)
            try:
                if script and not self._exact:
                    os.fchmod(fd, mode)  # the umask took bits away: scripts run for everyone
                written = os.write(fd, data)
                if written < len(data):
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        self._names[name] = None

    @contextlib.contextmanager
    def text(self, name: str) -> Iterator[TextIO]:
        path = self._path(name)
        path.unlink(missing_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            yield handle
        self._names[name] = None

    def __getitem__(self, name: str) -> bytes:
        if name not in self._names:
            raise KeyError(name)
        return (self.folder / name).read_bytes()

    def __delitem__(self, name: str) -> None:
        del self._names[name]
        (self.folder / name).unlink()

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.folder.exists():
            # Not stopped half-way by a second signal (a Ctrl-C after a `kill`): the folder
            # would stay behind, and nothing removes it later.
            with signals_held():
                shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, name: str) -> Path:
        return Path(self._text_path(name))

    def _text_path(self, name: str) -> str:
        folder, _, _ = name.rpartition("/")
        if folder and folder not in self._made:
            (self.folder / folder).mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        return self._root + name


def _create(path: str, mode: int) -> int:
    """`path` created for writing. One there already was staged by another process of the
    compile (`fanout.py`) for a job of the same name, a clash the compile reports once it
    meets it: it is replaced (unlinked, never written to: it may be a link to the old
    bundle's file)."""
    for _ in range(100):
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)


def _umask() -> int:
    """The process's umask (read by setting it, then setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at `path` is a regular file holding exactly `data` (False when it is
    missing or unreadable). Opened without blocking: a FIFO there must not hang a compile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        found = os.fstat(fd)
        # One read more than the size expected tells a longer file apart.
        return (
            stat.S_ISREG(found.st_mode)
            and found.st_size == len(data)
            and os.read(fd, len(data) + 1) == data
        )
    except OSError:
        return False
    finally:
        os.close(fd)


def _link_if_same(old: str, target: str, data: bytes) -> bool:
    """Link the old bundle's file when it holds exactly `data` (a recompile that changed
    nothing writes nothing). The old file is never written to afterwards: bundles are only
    ever replaced whole."""
    if not _holds(old, data):
        return False
    try:
        os.link(old, target)
    except OSError:
        return False  # gone, or a file system without hard links: write it
    return True
