"""One reconcile at a time per state dir, across login nodes.

`flock` is node-local on many shared filesystems, so the lock is a file created atomically
(O_CREAT|O_EXCL) holding host, pid, a random token and a lease. A lock whose lease ran out,
or whose holder on this host is dead, is taken over: renamed aside first (only one contender's
rename can succeed), then re-created.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LEASE_SECONDS = 15 * 60


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str
    expires: float


class Busy(Exception):
    def __init__(self, holder: Holder | None) -> None:
        self.holder = holder
        who = f"{holder.host} pid {holder.pid}" if holder else "someone"
        super().__init__(f"another reconcile is running ({who})")


class StateLock:
    def __init__(self, state_dir: Path, lease: float = LEASE_SECONDS) -> None:
        self.path = state_dir / "reconcile.lock"
        self.lease = lease
        self.token = secrets.token_hex(8)
        self.held = False

    def verify(self) -> None:
        """Placeholder fence until the lock rewrite lands."""

    def acquire(self, wait: float = 0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                return
            holder = self._read()
            if holder is not None and not self._stale(holder):
                raise Busy(holder)
            self._take_over(holder)
        raise Busy(self._read())

    def refresh(self) -> None:
        """Extend the lease (long --wait runs call this every round)."""
        if self.held:
            tmp = self.path.with_name(f".{self.path.name}.{self.token}")
            tmp.write_text(json.dumps(self._holder().__dict__))
            os.replace(tmp, self.path)

    def release(self) -> None:
        if not self.held:
            return
        holder = self._read()
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _holder(self) -> Holder:
        return Holder(socket.gethostname(), os.getpid(), self.token, time.time() + self.lease)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(self._holder().__dict__))
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _read(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            # A half-written lock (its writer died mid-write) counts as stale.
            return Holder("?", -1, "", 0.0)

    def _stale(self, holder: Holder) -> bool:
        if holder.expires < time.time():
            return True
        if holder.host == socket.gethostname() and holder.pid > 0:
            try:
                os.kill(holder.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def _take_over(self, stale: Holder | None) -> None:
        aside = self.path.with_name(f".{self.path.name}.stale.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = Holder(**json.loads(aside.read_text()))
        except (OSError, ValueError, TypeError):
            moved = Holder("?", -1, "", 0.0)
        if stale is not None and moved.token != stale.token:
            # Between our read and our rename someone else took the lock: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)
