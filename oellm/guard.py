"""The edge where errors become exit codes: `guarded` wraps every command.

An `OellmError` is printed as one message and ends the command with its own exit code; a
closed standard output (`oellm status b/ | head`) is not an error: the command finishes its
work quietly; anything else is a bug: exit 3, the traceback written to a log file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn, TypeVar

import click

from oellm import __version__
from oellm.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, OellmError, Terminated

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("oellm")


def guarded(func: F) -> F:
    """Run a command: its returned int is the exit code; errors become theirs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = func(*args, **kwargs)
        except OellmError as error:
            click.echo(_rendered(error), err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            # Ctrl-C: every step a round takes is recorded before and after, so stopping
            # anywhere is safe; the next round picks up. 130 is the shell's code for SIGINT.
            with contextlib.suppress(OSError):  # its terminal may be gone
                click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Terminated as stopped:
            with contextlib.suppress(OSError):  # SIGHUP: its terminal is gone
                click.echo(f"stopped by {signal.Signals(stopped.signum).name}", err=True)
            sys.exit(128 + stopped.signum)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            fail_internal(exc)
        sys.exit(EXIT_OK if code is None else int(code))

    return wrapper  # type: ignore[return-value]


def _rendered(error: OellmError) -> str:
    # Compiler problems carry their own `file:line:col:` prefix; everything else says `error:`.
    return error.render() if error.positioned else f"error: {error.render()}"


def fail_internal(exc: BaseException) -> NoReturn:
    fd, name = tempfile.mkstemp(prefix="oellm-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"oellm {__version__}\nargv: {sys.argv!r}\n\n")
        handle.write("".join(traceback.format_exception(exc)))
    click.echo(
        f"internal error: {type(exc).__name__}: {exc}\n"
        f"  this is a bug in oellm; the traceback is in {name}",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)


class QuietPipe:
    """Standard output that a closed pipe cannot break: once the reader is gone (`| head`),
    further output goes to /dev/null and the command finishes its work (a reconcile round
    never stops half-way because nobody reads it any more), exiting as it would have."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._gone(exc)
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except OSError as exc:
                self._gone(exc)

    def _gone(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
            raise exc
        self._closed = True
        log.debug("standard output was closed by its reader; output is dropped from here on")
        # Python flushes stdout once more at exit: point the descriptor at /dev/null first.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_stdout() -> None:
    if not isinstance(sys.stdout, QuietPipe) and sys.stdout is not None:
        sys.stdout = QuietPipe(sys.stdout)
