"""The jobs of one stage compiled by several processes at once, on the login node's cores.

The jobs of a stage do not depend on each other, so their points are cut into contiguous
parts: this process compiles the first, and a process forked for each other part compiles it
(with everything compiled so far at hand) and sends its results back through a pipe. Results
come out in the points' order whatever the number of processes, and so does the first error,
so a bundle (or the error) is the same byte for byte with one process or eight.

Files go where the compiler puts them (`FileSink`): a worker writes its staged files itself
and tells which it made (`FileSink.part` and `adopt`); a plain mapping gets a worker's files
back through the pipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import mmap
import os
import pickle
import signal
import struct
import traceback
from collections.abc import Callable, Generator, MutableMapping, Sequence
from typing import Any, TypeVar

from oellm.errors import OellmError
from oellm.stopping import TERMINATING, signals_held

from .errors import fail
from .staging import FileSink

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "OELLM_COMPILE_WORKERS"
MAX_WORKERS = 8
# Points per process at least: forking and sending results back cost about a job's compile
# per hundred results; below this, one process is as quick.
MIN_PART = 500
_COUNT = struct.Struct("q")
_TICK = 64  # a worker tells how far it got every this many points
_BATCH = 1024  # results per pickle a worker sends
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_END = "oellm.fanout.end"  # marks a worker's last message


def workers(points: int) -> int:
    """How many processes compile `points` jobs: one per core this process may run on (at
    most 8; `OELLM_COMPILE_WORKERS` sets it), and no more than gives each `MIN_PART`."""
    if not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        return 1
    given = os.environ.get(WORKERS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise fail(
                f"{WORKERS_ENV}={given!r}: give a number of processes, 1 or more",
                hint=f"unset {WORKERS_ENV} for one per core (at most {MAX_WORKERS})",
            )
        cores = int(given)
    else:
        cores = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
    return max(1, min(cores, points // MIN_PART))


class WorkerFailed(RuntimeError):
    """A worker process met a bug (exit 3). Its traceback, from the worker, is the cause, so
    that the crash log holds it and the terminal one line."""

    def __init__(self, message: str, remote: str | None = None) -> None:
        super().__init__(message)
        self.remote = remote
        if remote is not None:
            self.__cause__ = _Traceback(remote)

    def __reduce__(self) -> tuple[type[WorkerFailed], tuple[str, str | None]]:
        return WorkerFailed, (str(self), self.remote)  # the cause goes along

    @classmethod
    def here(cls, what: str) -> WorkerFailed:
        """The failure the exception being handled stands for, with its traceback."""
        text = traceback.format_exc()
        return cls(f"{what}: {text.strip().splitlines()[-1]}", text)


class _Traceback(Exception):
    """A traceback from another process, as its text."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


class WorkerEnded(OellmError):
    """A worker process ended without its results: the system killed it (out of memory, a
    signal)."""


@dataclasses.dataclass(frozen=True)
class _Worker:
    pid: int
    read: int  # the read end of its pipe


Part = _Worker | Sequence[Any]  # a worker compiling a part, or a part left to this process


def fan_out(
    items: Sequence[T],
    work: Callable[[T], R],
    files: MutableMapping[str, bytes],
    count: int,
    progress: Callable[[int], None] | None = None,
) -> Generator[R, None, None]:
    """`work(item)` for each item, in order, by `count` processes; `progress` is told how
    many are done while this process works. Consume it to the end, or close it: the files of
    a worker are taken into `files` after its last result, and closing it stops the workers.
    A worker that cannot be forked (a process limit, say) leaves its part to this process."""
    if count > 1 and signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN:
        # Started by a program that ignores SIGCHLD (which a process inherits): the system
        # reaps workers at once, and how one ended (killed, out of memory) could not be told.
        count = 1
    if count <= 1:
        for done, item in enumerate(items, 1):
            yield work(item)
            if progress is not None:
                progress(done)
        return
    size = -(-len(items) // count)
    parts = [items[start : start + size] for start in range(0, len(items), size)]
    counters = mmap.mmap(-1, _COUNT.size * len(parts))
    parent = os.getpid()
    later: list[Part] = []
    try:
        for number, part in enumerate(parts[1:], 1):
            # Ctrl-C (and SIGTERM, SIGHUP) waits until the child is set up and listed:
            # caught by this process's handler in the child, it would run this process's
            # cleanup there (stop the others, remove the staging folder); here, before it
            # is listed, it would leave the child unstopped.
            with signals_held() as mask:
                others = [left.read for left in later if isinstance(left, _Worker)]
                later.append(_fork(part, work, files, counters, number, parent, mask, others))
        for done, item in enumerate(parts[0], 1):
            yield work(item)
            if progress is not None and done % _TICK == 0:
                others = sum(
                    _COUNT.unpack_from(counters, n * _COUNT.size)[0] for n in range(1, len(parts))
                )
                progress(done + others)
        while later:
            head = later[0]
            if not isinstance(head, _Worker):
                del later[0]
                yield from map(work, head)
                continue
            # A worker stays listed (to be stopped by `finally`) until it is reaped, so
            # that a stop at any point of its receiving leaves no worker running.
            end, unreadable = yield from _receive(head.read)
            with signals_held():
                del later[0]
                status = _reap(head)
            report, error = _outcome(status, end, unreadable)
            if report is not None:
                _adopt(files, report)
            if error is not None:
                raise error
    finally:
        # Stopping the workers is not itself stopped half-way (a Ctrl-C after a `kill`).
        with signals_held():
            for left in later:
                if isinstance(left, _Worker):
                    _stop(left.pid, left.read)
        counters.close()


def _fork(
    part: Sequence[Any],
    work: Callable[[Any], Any],
    files: MutableMapping[str, bytes],
    counters: mmap.mmap,
    number: int,
    parent: int,
    mask: set[int | signal.Signals],
    others: list[int],
) -> Part:
    """A worker process for `part`: (its pid, the read end of its pipe); or, when no process
    can be forked, the part itself, to compile here. `mask`: the signal mask to restore in
    the child."""
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return part
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        # Pipes this process never reads: its own, and those of the workers before it.
        _child(part, work, files, write, (read, *others), counters, number, parent, mask)
    os.close(write)
    return _Worker(pid, read)


def _child(
    part: Sequence[Any],
    work: Callable[[Any], Any],
    files: MutableMapping[str, bytes],
    write: int,
    unread: Sequence[int],
    counters: mmap.mmap,
    number: int,
    parent: int,
    mask: set[int | signal.Signals],
) -> None:
    """Compile `part` in the forked process, send its results, files report and error, and
    end without running the parent's exit handlers or flushing its buffers. `unread`: the
    read ends of pipes this process closes (the compile alone reads them, and its close of
    one must reach that pipe's worker)."""
    code = 0
    try:
        for fd in unread:
            os.close(fd)
        # Ctrl-C, `kill` of the process group or a closed terminal end this process as
        # they end the compile (whose handlers would run its cleanup here); ignored, they
        # stay ignored.
        for signum in (signal.SIGINT, *TERMINATING):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # What this process puts into `files` is sent back: a sink tells which files it
        # made; a plain mapping (the same object, forked) gives those added after `before`.
        before = len(files)
        if isinstance(files, FileSink):
            files.part()
        results: list[Any] = []
        error: BaseException | None = None
        try:
            for done, item in enumerate(part, 1):
                results.append(work(item))
                if done % _TICK == 0:
                    _COUNT.pack_into(counters, number * _COUNT.size, done)
                    if os.getppid() != parent:
                        break  # the compile was killed: no one waits for this part
        except OellmError as exc:
            error = _sendable(exc)
        except RecursionError:
            # The compile's own backstop (`compile_bundle`) tells the user what is too deep.
            error = RecursionError("maximum recursion depth exceeded")
        except Exception:
            error = WorkerFailed.here("a compile worker process met a bug")
        report: Any
        if isinstance(files, FileSink):
            report = files.report()
        else:
            report = dict(itertools.islice(files.items(), before, None))
        with os.fdopen(write, "wb") as out:
            # In batches, which the parent takes in one at a time (its memory stays flat).
            for start in range(0, len(results), _BATCH):
                try:
                    batch = pickle.dumps(results[start : start + _BATCH], _PROTOCOL)
                except Exception:
                    report, error = None, WorkerFailed.here("a worker's results cannot be sent")
                    break
                out.write(batch)
            out.write(_last(report, error))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _sendable(error: OellmError) -> OellmError:
    """The error, or one that renders the same and survives a pickle (for an error type whose
    arguments are not its `args`)."""
    try:
        back = pickle.loads(pickle.dumps(error))
        if type(back) is type(error) and back.render() == error.render():
            return error
    except Exception:
        pass
    same = OellmError(error.render())
    same.exit_code = error.exit_code
    same.positioned = error.positioned
    return same


def _last(report: Any, error: BaseException | None) -> bytes:
    """The last message of a worker: (the end mark, its files report, its error)."""
    try:
        return pickle.dumps((_END, report, error), _PROTOCOL)
    except Exception:
        failed = WorkerFailed.here("a worker's results cannot be sent")
        return pickle.dumps((_END, None, failed), _PROTOCOL)


def _receive(
    read: int,
) -> Generator[Any, None, tuple[tuple[Any, Any, Any] | None, WorkerFailed | None]]:
    """A worker's results as they are read from its pipe (left open), batch by batch; returns
    its last message (None if it ended before it) and what made its pipe unreadable."""
    end: tuple[Any, Any, Any] | None = None
    unreadable: WorkerFailed | None = None
    with os.fdopen(read, "rb", closefd=False) as pipe:
        while end is None:
            try:
                sent = pickle.load(pipe)
            except EOFError:
                break  # the worker ended before its last message
            except Exception:
                unreadable = WorkerFailed.here("a worker's results cannot be read")
                break
            if type(sent) is tuple and sent and sent[0] == _END:
                end = sent
            else:
                yield from sent
    return end, unreadable


def _outcome(
    status: int, end: tuple[Any, Any, Any] | None, unreadable: WorkerFailed | None
) -> tuple[Any, BaseException | None]:
    """A reaped worker's files report and error, from its exit `status` and last message."""
    code = os.waitstatus_to_exitcode(status)
    if unreadable is not None and code >= 0:
        # Sent by a worker that ended by itself (exit 1: it was still sending when its pipe
        # was closed); one killed (out of memory) may have left a batch cut short instead.
        raise unreadable
    if code != 0 or end is None:
        raise WorkerEnded(
            f"a compile worker process ended early ({_status(status)})",
            hint=f"if memory is short, set {WORKERS_ENV}=1 to compile in one process",
        )
    return end[1], end[2]


def _status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit {code}"


def _reap(worker: _Worker) -> int:
    """The exit status of a worker whose results were read: its pipe is closed first, so that
    one still sending (its results could not be read) ends rather than waits. Stopped if the
    wait is cut short."""
    os.close(worker.read)
    try:
        return os.waitpid(worker.pid, 0)[1]
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(worker.pid, 0)
        raise


def _stop(pid: int, read: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)


def _adopt(files: MutableMapping[str, bytes], report: Any) -> None:
    if isinstance(files, FileSink):
        files.adopt(report)
    else:
        files.update(report)
