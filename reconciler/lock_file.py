"""The state lock's file: its name, its format (one JSON object naming the holder's host, pid,
token and lease expiry) and reading it, with the file's identity, into a `Seen`. Taking, keeping
and releasing the lock is lock.py's; moving a stale one aside is lock_takeover.py's.

The file format (four keys: host, pid, token, expires) is the one every oellm version writes;
older versions read a lock with any other key as damaged, so no key is added.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ReconcileError

STATE_LOCK_NAME = "reconcile.lock"
# The hint of every error about the state dir's files (lock.py's own included).
PERMISSION_HINT = "the state dir and its lock must be readable and writable by whoever runs oellm"


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str
    expires: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def parse_holder(raw: bytes) -> Holder | None:
    """The holder in a lock file's bytes, or None when they are not a complete, well-typed one."""
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    host, pid, token, expires = (data.get(k) for k in ("host", "pid", "token", "expires"))
    if not (isinstance(host, str) and host and isinstance(token, str) and token):
        return None
    # bool is an int to Python; a lock saying `"pid": true` is not a pid.
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    if not math.isfinite(expires):
        return None
    return Holder(host, pid, token, float(expires))


@dataclass(frozen=True)
class Seen:
    """One read of a lock file: its bytes, which file it was, and the holder they name."""

    raw: bytes
    dev: int
    ino: int
    mtime_ns: int
    holder: Holder | None

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    def same_as(self, other: Seen) -> bool:
        return (self.raw, self.dev, self.ino, self.mtime_ns) == (
            other.raw,
            other.dev,
            other.ino,
            other.mtime_ns,
        )

    def key(self) -> str:
        """A name for this lock file (the same for every contender that read it)."""
        seen = hashlib.sha256(self.raw)
        # Not st_dev: each NFS or Lustre client numbers its mounts itself, so two login
        # nodes would name the same file differently (and each take a breaker of its own).
        seen.update(f"|{self.ino}|{self.mtime_ns}".encode())
        return seen.hexdigest()[:24]


def read_lock(path: Path) -> Seen | None:
    """The lock at `path`, None when there is none; a folder or an unreadable file is the
    user's to fix (ReconcileError), never a crash."""
    for _ in range(3):
        try:
            # O_NONBLOCK: a FIFO in the lock's place must not hang the round.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise _folder(path) from None
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                continue  # NFS: replaced between lookup and open
            raise lock_error("cannot read the state lock", exc, path) from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise _folder(path)
            if not stat.S_ISREG(info.st_mode):
                raise ReconcileError(
                    "the state lock is not a regular file",
                    str(path),
                    hint="remove it; oellm creates the lock file itself",
                )
            raw = os.read(fd, 64 * 1024)
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                continue
            raise lock_error("cannot read the state lock", exc, path) from None
        finally:
            os.close(fd)
        return Seen(raw, info.st_dev, info.st_ino, info.st_mtime_ns, parse_holder(raw))
    return None


def _folder(path: Path) -> ReconcileError:
    return ReconcileError(
        "the state lock is a folder, not a file",
        str(path),
        hint="remove that folder (no oellm creates it); the lock is a file oellm makes itself",
    )


def lock_error(what: str, exc: OSError, path: Path) -> ReconcileError:
    """The user's error for a failed operation on the lock file at `path`, with the hint that
    the state dir must be readable and writable."""
    return ReconcileError(f"{what}: {exc.strerror or exc}", str(path), hint=PERMISSION_HINT)
