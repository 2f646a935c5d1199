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


@contextlib.contextmanager
def terminable() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `Terminated` (once: a second one while the
    command unwinds is ignored), so that the command cleans up as it does on Ctrl-C rather
    than die where it stands. A signal ignored already (`nohup`) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set in the main thread
        return
    taken = [s for s in TERMINATING if signal.getsignal(s) is signal.SIG_DFL]

    def stop(signum: int, frame: FrameType | None) -> None:
        for each in taken:
            signal.signal(each, signal.SIG_IGN)
        raise Terminated(signum)

    for each in taken:
        signal.signal(each, stop)
    try:
        yield
    finally:
        for each in taken:
            signal.signal(each, signal.SIG_DFL)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (a step that must not stop
    half-way, like swapping a bundle's folders); their handlers run right after it."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *TERMINATING})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


__all__ = ["TERMINATING", "signals_held", "terminable"]
