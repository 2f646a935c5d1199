"""A query started early: the accounting question a round is about to ask, asked before the
round has read what decides it (`reconciler/prefetch.py` guesses it), so that the scheduler's
answer is on its way while the round reads the bundle and the records.

The round takes the early answer only for the very same command line, asked at most
`MAX_AGE_S` before it would have asked itself; anything else asks anew. A wrong guess so costs
a wasted query, never a different answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

# An early answer is older than the round's records by the time the round took to read them,
# while it held no lock yet. slurmdbd itself lags slurmctld by seconds (a job's name reaches
# sacct 2-5 s after it ends, slurm_parse.ALLOCATION_PLACEHOLDER), and the round reads squeue
# afresh: an answer no older than that tells the round nothing a fresh one would not. Older, it
# is asked again.
MAX_AGE_S = 5.0


class EarlyQuery(Generic[T]):
    """`call` (which runs `argv`) started now, in a thread of its own."""

    def __init__(
        self,
        argv: Sequence[str],
        call: Callable[[], T],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = tuple(argv)
        self._clock = clock
        self.started = clock()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-query")
        self.future: Future[T] = pool.submit(call)
        pool.shutdown(wait=False)  # its thread ends with the call

    def answers(self, argv: Sequence[str]) -> bool:
        """Whether this is the question `argv` asks, asked recently enough to stand for it."""
        return tuple(argv) == self.argv and self._clock() - self.started <= MAX_AGE_S

    def take(self, argv: Sequence[str] | None) -> Future[T] | None:
        """Its answer, when it is the one to `argv` (`answers`); else dropped (`discard`).
        Used once either way. `argv` None: no such question is asked, so it is dropped."""
        if argv is not None and self.answers(argv):
            return self.future
        self.discard()
        return None

    def discard(self) -> None:
        """Not needed: a call not yet started never starts. One under way runs to its end
        (the process waits for it when it exits), and its answer is dropped."""
        self.future.cancel()
