"""A bundle's files written to their staging folder as the compiler produces them, so that a
large sweep never holds every script in memory (`oellm compile`; `write.py` swaps the folder
in once the bundle is complete).

A file that the bundle being replaced already holds byte for byte is linked from it, not
written again. Nothing is synced here: `write.py` syncs the folder's file system once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import TextIO


class StagedFiles(MutableMapping[str, bytes]):
    """File name (relative, with '/') -> bytes, kept in `folder` rather than in memory.

    A context manager: leaving it removes the folder unless it was swapped in meanwhile."""

    def __init__(self, folder: Path, target: Path, previous: Path | None) -> None:
        self.folder = folder
        self.target = target  # the bundle folder this staging folder becomes
        self._previous = previous  # the bundle being replaced, if any
        self._names: dict[str, None] = {}
        self._made: set[str] = set()

    def __setitem__(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        if self._previous is None or not _link_if_same(self._previous / name, path, data):
            with _open(path, name) as fd:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        self._names[name] = None

    @contextlib.contextmanager
    def text(self, name: str) -> Iterator[TextIO]:
        """A file to write text into in pieces (a large lockfile is never one string in
        memory)."""
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

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, name: str) -> Path:
        folder, _, _ = name.rpartition("/")
        if folder and folder not in self._made:
            (self.folder / folder).mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        return self.folder / name


class _open:
    """A new file for writing (executable for a script), as a raw descriptor."""

    def __init__(self, path: Path, name: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if name.endswith(".sbatch"):
            os.fchmod(self.fd, 0o755)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


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
