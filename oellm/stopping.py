"""How a command is stopped from outside without leaving half its work behind.

Ctrl-C raises KeyboardInterrupt where the command is; `terminable` makes SIGTERM and SIGHUP
(`kill`, a closed terminal, a batch system's time limit) do the same with `Terminated`, so
that a compile removes its staging folder either way. `signals_held` keeps all three out of a
step that must not stop half-way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from oellm.errors import Terminated

# What ends a command from outside: `kill`, the terminal closed, a batch system's time limit.
TERMINATING = (signal.SIGTERM, signal.SIGHUP)
HELD = frozenset({signal.SIGINT, *TERMINATING})  # what `signals_held` keeps out


@contextlib.contextmanager
def terminable(leave_ignored: bool = False) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `Terminated`, so that the command cleans up as
    it does on Ctrl-C rather than die where it stands. Once one of the three came, the
    others are ignored while the command unwinds (a Ctrl-C after a `kill` would stop its
    cleanup half-way), and, with `leave_ignored` (a command run from the shell), until the
    process ends: stopped, another changes nothing. A signal ignored already (`nohup`) stays
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set in the main thread
        return
    before = {s: signal.getsignal(s) for s in HELD}
    taken = [
        s
        for s in HELD
        if before[s] is signal.SIG_DFL
        or (s == signal.SIGINT and before[s] is signal.default_int_handler)
    ]
    stopped = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True
        for each in taken:
            # Not SIG_IGN: one that came meanwhile, still to be handled, would then be an
            # error ("ignored due to race condition").
            signal.signal(each, _unheeded)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    try:
        for each in taken:
            signal.signal(each, stop)
        yield
    finally:
        if not (stopped and leave_ignored):
            for each in taken:
                signal.signal(each, before[each])


def _unheeded(signum: int, frame: FrameType | None) -> None:
    """A stop signal that came after the first: the command is stopping already."""


@contextlib.contextmanager
def signals_held() -> Iterator[set[int | signal.Signals]]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (a step that must not stop
    half-way, like swapping a bundle's folders); their handlers run right after it. Gives
    the signal mask it puts back (a process forked inside sets it for itself)."""
    # The mask as it is, first: blocking may run a handler of a signal already pending, which
    # raises with the signals blocked already.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        yield before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


__all__ = ["HELD", "TERMINATING", "signals_held", "terminable"]
