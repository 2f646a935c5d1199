"""One reconcile at a time per state dir, across login nodes: the state lock's life (acquire,
`verify`, refresh, release) and judging when a lock is stale. The lock file's format and reading
it are lock_file.py's; moving a stale lock aside is lock_takeover.py's.

`flock` is node-local on many shared filesystems (Lustre, metomi/rose#1897), so the lock is a
file holding host, pid, a random token and a lease. It is never visible without its holder: the
holder is written to a uniquely named file that is then hard-linked to the lock's name, which
fails when the lock exists, also on NFS and Lustre (open(2), O_EXCL). A lock is taken over only
when its lease ran out, its holder on this host is dead, or it is unreadable or invalid (and has
not changed for a grace period), by one contender at a time (lock_takeover.py); a holder
removes its own the same way, so that a release never crosses a takeover. `verify()` is the
fence a holder calls before each irreversible step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType

from oellm.errors import EXIT_TEMPFAIL, OellmError

from .errors import ReconcileError
from .lock_file import PERMISSION_HINT, STATE_LOCK_NAME, Holder, Seen, lock_error, read_lock
from .lock_takeover import NO_HARD_LINKS, clear_leftovers, file_system_now, take_over

log = logging.getLogger("oellm.lock")

LEASE_SECONDS = 15 * 60
# A shorter lease (tests of renewal use one); at most LEASE_SECONDS, which every oellm accepts.
LEASE_ENV = "OELLM_LOCK_LEASE_SECONDS"
# The largest lease any oellm writes is LEASE_SECONDS from its own clock; an expiry further ahead
# than that plus this much clock skew between login nodes was never written by a live holder.
CLOCK_SLACK_SECONDS = 10 * 60
# A lock that cannot be parsed is damage, or an older oellm between creating the file and writing
# it (O_EXCL then write): it counts as abandoned once its file has not changed for this long.
DAMAGED_GRACE_SECONDS = 60.0
# How long a release waits for a contender holding the lock's breaker to move it aside.
RELEASE_PATIENCE_SECONDS = 1.0
# Fault injection: sleep between writing the holder and publishing the lock (tests only).
STALL_ENV = "OELLM_LOCK_STALL_SECONDS"


class Busy(Exception):
    def __init__(self, holder: Holder | None, detail: str = "") -> None:
        self.holder = holder
        who = f"{holder.host} pid {holder.pid}" if holder else detail or "someone"
        super().__init__(f"another reconcile is running ({who})")


class LockLost(OellmError):
    """The lock is no longer ours (taken over, or our lease ran out): stop acting. Nothing is
    lost: what this round recorded, the round that holds the lock now reads."""

    exit_code = EXIT_TEMPFAIL

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: lost the state lock ({why}); stopping this round")


class RenewFailed(LockLost):
    """Our lease could not be extended (the state dir refused the write): the round stops
    before its next irreversible step rather than act on a lease that may run out."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        OellmError.__init__(
            self,
            f"{path}: could not renew the state lock's lease ({why}); stopping this round, "
            "nothing more is submitted and the next round carries on",
            hint=PERMISSION_HINT,
        )


class StateLock:
    """`acquire` once, `verify` before each irreversible step, `refresh` between rounds of a
    long run, `release` at the end (or use it as a context manager)."""

    def __init__(
        self,
        state_dir: Path,
        lease: float | None = None,
        grace: float = DAMAGED_GRACE_SECONDS,
    ) -> None:
        lease = lease if lease is not None else lease_from_env()
        if not 0 < lease <= LEASE_SECONDS:
            raise ValueError(f"lease must be in (0, {LEASE_SECONDS}] seconds, not {lease}")
        self.path = state_dir / STATE_LOCK_NAME
        self.lease = lease
        self.grace = grace
        self.token = secrets.token_hex(8)
        self.held = False
        self.expires = 0.0
        self._hard_links = True

    # -- the API ------------------------------------------------------------------------------

    def acquire(self, wait: float = 0) -> None:
        """Take the lock, or raise Busy. With `wait`, keep trying for up to that many seconds."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReconcileError(
                f"cannot create the state dir: {exc.strerror}",
                str(self.path.parent),
                hint=PERMISSION_HINT,
            ) from None
        deadline = time.monotonic() + wait
        pause = 0.05
        while True:
            busy = self._attempt()
            if busy is None:
                self.held = True
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise busy
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)

    def verify(self) -> None:
        """Raise LockLost unless the lock file still names us and our lease has not run out.

        One small read; renews the lease once less than half of it is left, so a round that
        takes longer than a lease stays safe as long as it keeps calling this."""
        left = self._ours().expires - time.time()
        if left <= 0:
            self.held = False
            raise LockLost(self.path, "the lease ran out")
        if left < self.lease / 2:
            self.refresh()

    def refresh(self) -> None:
        """Extend the lease (`verify` does once less than half of it is left). Raises LockLost
        rather than replace a lock that is no longer ours or past its lease, RenewFailed when
        the write fails."""
        if self._ours().expires <= time.time():
            # A contender may be taking it over right now: a replace could overwrite its lock.
            self.held = False
            raise LockLost(self.path, "the lease ran out")
        # A contender replaces a lock only once it judged it stale, which a live holder within
        # its lease never is; so checked just before, the replace overwrites only our own.
        try:
            tmp = self._write_temp()
        except ReconcileError as exc:
            raise RenewFailed(self.path, exc.message) from None
        try:
            os.replace(tmp, self.path)
        except OSError as exc:
            _discard(tmp)
            raise RenewFailed(self.path, f"cannot write the state lock: {exc.strerror}") from None
        if not self._confirm():
            self.held = False
            raise LockLost(self.path, "another reconcile took it over")

    def release(self) -> None:
        """Remove our lock, through its breaker as a takeover would: a contender that judged
        it stale (our lease ran out while we were stopped, or its clock is ahead of ours) and
        is moving it aside holds that breaker, and then the lock is left to it. Without the
        breaker, our removal would free the name for a new lock that the mover then moved."""
        if not self.held:
            return
        self.held = False
        deadline = time.monotonic() + RELEASE_PATIENCE_SECONDS
        pause = 0.05
        try:
            while True:
                seen = self.read(self.path)
                if seen is None or seen.holder is None or seen.holder.token != self.token:
                    return  # moved by a contender, or taken over since: nothing of ours
                if take_over(self, seen, "release the state lock"):
                    return
                if time.monotonic() >= deadline:
                    # A contender linked the breaker and never moved the lock (killed in
                    # that moment): the lock runs out its lease.
                    log.warning(
                        "state lock left to run out its lease: %s: a contender that took it "
                        "for stale holds its breaker",
                        self.path,
                    )
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
        except (OSError, ReconcileError) as exc:
            # The state dir refuses (made read-only, full): the lock runs out its lease. Not
            # raised: a release runs on the way out, often with the error that says why.
            why = exc.message if isinstance(exc, ReconcileError) else exc.strerror
            log.warning("state lock left to run out its lease: %s: %s", self.path, why)

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

    # -- acquiring ----------------------------------------------------------------------------

    def _attempt(self) -> Busy | None:
        """One try: None when we hold the lock, else the Busy to report."""
        for _ in range(3):
            if self._create():
                if not self._confirm():
                    return Busy(None, "lost a race for the lock")
                clear_leftovers(self)
                return None
            seen = self.read(self.path)
            if seen is None:
                continue  # released between our create and our read: try again
            if not self._stale(seen, time.time()):
                return Busy(seen.holder, "lock being written, or damaged")
            if not take_over(self, seen):
                return self._busy_now()
        return self._busy_now()

    def _busy_now(self) -> Busy:
        seen = self.read(self.path)
        return Busy(seen.holder if seen else None)

    def _stale(self, seen: Seen, now: float) -> bool:
        holder = seen.holder
        if holder is None or holder.expires > now + LEASE_SECONDS + CLOCK_SLACK_SECONDS:
            # Unreadable or impossible. Link creation never shows an incomplete lock, so this is
            # damage or an older oellm mid-write: wait until the file has been still a while
            # (by the file system's clock, which stamped it).
            age = file_system_now(self) - seen.mtime
            return age > self.grace or age < -CLOCK_SLACK_SECONDS
        if holder.expires < now:
            return True
        if holder.host == socket.gethostname():
            try:
                os.kill(holder.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False  # alive, another user's process
        return False

    def _create(self) -> bool:
        """Publish our holder under the lock's name; False when a lock exists."""
        if not self._hard_links:
            return self._create_exclusive()
        tmp = self._write_temp()
        try:
            _stall()
            try:
                os.link(tmp, self.path)
            except FileNotFoundError:
                # Our temporary file is gone: a holder took it for a killed contender's
                # (we were stopped for longer than the grace). Not published: try again.
                return False
            except FileExistsError:
                # NFSv2/3 link() is not idempotent: a retried request whose first try succeeded
                # answers EEXIST. Our file having two links means it did succeed (open(2)).
                # (More than two: a contender linked a breaker to it since.)
                return os.stat(tmp).st_nlink >= 2
            except OSError as exc:
                if exc.errno not in NO_HARD_LINKS:
                    raise self.error("cannot create the state lock", exc) from None
                self._hard_links = False
                return self._create_exclusive()
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self) -> bool:
        """Without hard links: create empty, then write. A reader in between sees an empty lock,
        which counts as busy until `grace` has passed."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise self.error("cannot create the state lock", exc) from None
        with os.fdopen(fd, "wb") as handle:
            _stall()
            handle.write(self._holder().to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _ours(self) -> Holder:
        """Our holder as the lock file has it, or LockLost."""
        if not self.held:
            raise LockLost(self.path, "not held")
        seen = self.read(self.path)
        if seen is None or seen.holder is None or seen.holder.token != self.token:
            self.held = False
            raise LockLost(self.path, "another reconcile took it over")
        return seen.holder

    def _confirm(self) -> bool:
        """Re-read the lock after writing it: ours only if it names our token."""
        seen = self.read(self.path)
        return seen is not None and seen.holder is not None and seen.holder.token == self.token

    # -- files --------------------------------------------------------------------------------

    def _holder(self) -> Holder:
        self.expires = time.time() + self.lease
        return Holder(socket.gethostname(), os.getpid(), self.token, self.expires)

    def _write_temp(self) -> Path:
        tmp = self.path.with_name(f".{STATE_LOCK_NAME}.{self.token}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._holder().to_bytes())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            _discard(tmp)
            raise self.error("cannot write the state lock", exc) from None
        return tmp

    def read(self, path: Path) -> Seen | None:
        """The lock at `path` (lock_file.read_lock); every read of the lock and of a file moved
        aside from it goes through here, where a test's contender can see it as another node."""
        return read_lock(path)

    def error(self, what: str, exc: OSError, path: Path | None = None) -> ReconcileError:
        """The user's error for a failed operation on the lock (or on `path`), with the hint
        that the state dir must be readable and writable."""
        return lock_error(what, exc, path or self.path)


def _discard(tmp: Path) -> None:
    """Remove our temp file after a failed write; whatever is in its place (a folder, a file
    we may not remove) only leaves the error already being reported."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def lease_from_env() -> float:
    """OELLM_LOCK_LEASE_SECONDS when it is a number in (0, LEASE_SECONDS], else the default."""
    try:
        seconds = float(os.environ.get(LEASE_ENV, ""))
    except ValueError:
        return LEASE_SECONDS
    return seconds if 0 < seconds <= LEASE_SECONDS else LEASE_SECONDS


def _stall() -> None:
    """Fault injection for tests: a slow shared filesystem between writing and publishing."""
    try:
        seconds = float(os.environ.get(STALL_ENV, "0"))
    except ValueError:
        return
    if seconds > 0:
        time.sleep(seconds)
