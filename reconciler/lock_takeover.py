"""Taking over a state lock that lock.py judged stale, or removing the holder's own at release
(the same way, so that the two never cross): moving it aside, or giving back one moved by
mistake; the file system's clock that judges how long a file has been still; and clearing
what takeovers and killed contenders leave beside the lock.

A stale lock is taken over by one contender at a time, the one that hard-links it to its breaker
(`.reconcile.lock.breaking.<that lock file's identity>.0`); renamed aside first, checked to be
the very lock judged stale, else given back. While the stale lock is in place a breaker is
removed only by its maker, so no contender can remove another's: one left by a contender that
died makes the next contenders, once it has not changed for the grace (by the file system's
clock), use the next number. A holder removes those left once they have been still for the
grace.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ReconcileError

if TYPE_CHECKING:
    from .lock import StateLock
    from .lock_file import Seen

# link() answers these where the filesystem has no hard links (some FUSE and SMB/CIFS mounts,
# FAT): creating the lock falls back to O_CREAT|O_EXCL and write, which the lock's grace keeps
# safe, and a takeover to moving the stale lock aside unserialised.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})


def take_over(lock: StateLock, stale: Seen, doing: str = "take over the stale state lock") -> bool:
    """Move the stale lock out of the way; False when it turned out not to be stale, or
    another contender is taking it over. `doing` names the step in an error (a release
    removes the holder's own lock this way too)."""
    # Cheap re-check first: a contender that took over since our read has replaced the file.
    again = lock.read(lock.path)
    if again is None:
        return True
    if not again.same_as(stale):
        return False
    # One contender at a time moves a stale lock: the one that links the file at the
    # lock's name to the stale lock's breaker. Two moving at once, the second would move
    # the lock the first had just created in its place, and a third could create one
    # meanwhile: two holders. While a breaker holds the stale file no contender creates
    # a lock (the stale one is in place) and no other one moves it.
    for number in itertools.count():
        breaker = _breaker(lock, stale, number)
        try:
            os.link(lock.path, breaker)
        except FileExistsError:
            if _abandoned(lock, breaker):
                continue  # its maker died while moving the stale lock: the next number
            return False
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise lock.error(f"cannot {doing}", exc) from None
            return _move_aside(lock, stale)  # no hard links: unserialised, as before
        try:
            linked = lock.read(breaker)
            if linked is None or not linked.same_as(stale):
                return False  # the lock changed before our link: not the stale one
            moved = _move_aside(lock, stale)
            if moved:
                # The stale lock is gone for good, and with it any use of its breakers:
                # those left by contenders that died go too.
                for earlier in range(number):
                    _breaker(lock, stale, earlier).unlink(missing_ok=True)
            return moved
        finally:
            breaker.unlink(missing_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns


def _breaker(lock: StateLock, stale: Seen, number: int) -> Path:
    return lock.path.with_name(f".{lock.path.name}.breaking.{stale.key()}.{number}")


def _abandoned(lock: StateLock, breaker: Path) -> bool:
    """Whether `breaker` was left by a contender that died while moving a stale lock (a
    moment's work): its file has not changed for `grace`, by the file system's clock.
    (It is the stale lock's file: each link made to it, by this or a later breaker,
    changes it.) False when it is gone: its maker is done."""
    try:
        changed = os.lstat(breaker).st_ctime
    except OSError:
        return False
    return file_system_now(lock) - changed > lock.grace


def file_system_now(lock: StateLock) -> float:
    """Now, by the clock that stamps the state dir's files: the change time of a file made
    now. On NFS that is the file server's clock, the same for every login node (whose own
    clocks may be minutes apart); where clients stamp times themselves (Lustre), it is
    this node's. This node's clock where no file can be made."""
    probe = lock.path.with_name(f".{lock.path.name}.now.{lock.token}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_ctime
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def clear_leftovers(lock: StateLock) -> None:
    """Holding the lock: remove what contenders that died left beside it (every file the
    lock makes beside itself is named `.<lock>.*`: breakers, clock probes, the files of
    contenders killed while making a lock, moving one aside or releasing it), once it has
    been still for the grace by the file system's clock. A live contender's file is there
    for a moment, and each link made to a stale lock's file stamps it anew; one that
    vanishes under a contender stopped for longer, or on a file system whose rename keeps
    the change time, costs that contender its try, not an error. One listing of the state
    dir, every time the lock is taken."""
    beside = f".{lock.path.name}."
    try:
        names = os.listdir(lock.path.parent)
    except OSError:
        return
    now: float | None = None
    for name in names:
        if not name.startswith(beside):
            continue
        path = lock.path.parent / name
        with contextlib.suppress(OSError):
            now = file_system_now(lock) if now is None else now
            if now - os.lstat(path).st_ctime > lock.grace:
                os.unlink(path)


def _move_aside(lock: StateLock, stale: Seen) -> bool:
    """Rename the stale lock aside and check it was the one judged stale."""
    aside = lock.path.with_name(f".{lock.path.name}.stale.{lock.token}")
    try:
        os.rename(lock.path, aside)
    except FileNotFoundError:
        return True
    try:
        moved = lock.read(aside)
    except ReconcileError:
        moved = None
    if moved is not None and moved.same_as(stale):
        aside.unlink(missing_ok=True)
        return True
    # We moved someone's fresh lock (taken between our check and our rename): give it back.
    give_back(lock, aside)
    aside.unlink(missing_ok=True)
    return False


def give_back(lock: StateLock, aside: Path) -> None:
    """Put a lock file moved to `aside` back at the lock's name (a takeover that moved a lock
    not the one it judged stale), unless a lock was created there meanwhile."""
    # When a third contender created a lock meanwhile, the owner of the moved one finds out
    # at its next verify().
    try:
        os.link(aside, lock.path)
    except (FileExistsError, FileNotFoundError):
        pass  # a lock was made there meanwhile, or the moved file is gone (nothing to give)
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise lock.error("cannot restore the state lock", exc) from None
        # No hard links here: rename back unless a lock appeared (a small race, accepted).
        if not lock.path.exists():
            os.rename(aside, lock.path)
