"""The error root and the exit-code table of the whole `oellm` command.

Every error a user or the cluster can cause derives from `OellmError` and carries the exit
code it ends the command with; only the CLI renders it. Anything else reaching the CLI is a
bug (exit 3, with the traceback in a log file). This module imports nothing of the package,
so every layer may derive its own errors from it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DIFFERENT = 1  # ran fine and found a difference (`diff`, `compile --check`), or acted
EXIT_USER = 2  # a user error: bad config, bad usage, a damaged state file
EXIT_INTERNAL = 3  # a bug in oellm: the traceback is in a log file whose path is printed
EXIT_TEMPFAIL = 75  # the scheduler could not be asked: nothing destructive done, retry later
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT), as a shell reports it


class Terminated(BaseException):
    """SIGTERM or SIGHUP while a command that cleans up after itself runs (`stopping.terminable`):
    raised where the command is, so that it unwinds (a compile removes its staging folder);
    the command then ends with the signal's shell code (128 + its number). Not an
    `Exception`: nothing that handles errors takes it for one."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


class OellmError(Exception):
    """A problem the user (or the cluster) caused, rendered by the CLI as one message."""

    exit_code: int = EXIT_USER
    # Whether `render()` already starts each line with where it happened (`file:line:col:`);
    # otherwise the CLI puts `error:` before it.
    positioned: bool = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def render(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class CommandError(OellmError):
    """A program could not be run, or did not answer: carries the command and its output."""

    def __init__(self, argv: list[str], message: str, output: str = "") -> None:
        self.argv = argv
        self.output = output
        shown = " ".join(argv)
        super().__init__(message)
        # str(error) shows the command and what it printed, for logs and error lines.
        self.args = (f"{shown}: {message}" + (f"\n{output.strip()}" if output.strip() else ""),)

    def render(self) -> str:
        return str(self)


class CommandTimeout(CommandError):
    """A program did not finish within its time limit (it was killed)."""

    exit_code = EXIT_TEMPFAIL
