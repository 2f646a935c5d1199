"""The reconciler's errors: data, rendered by the CLI (their exit codes are in oellm.errors).

`ReconcileError` is a user-facing problem with the bundle or the state (exit 2);
`SchedulerError` is a scheduler command that said no; `SchedulerUnavailable` means SLURM could
not be asked or did not answer (exit 75: nothing destructive happened, retry later).
"""

from __future__ import annotations

from oellm.errors import EXIT_TEMPFAIL, CommandError, OellmError


class ReconcileError(OellmError):
    """A problem the user must fix: a bad bundle, a damaged state file, a bad argument."""

    def __init__(self, message: str, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint)

    def render(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return text + (f"\n  hint: {self.hint}" if self.hint else "")


class SchedulerError(CommandError):
    """A scheduler command failed; carries the command and what it printed."""


class SubmissionRefused(SchedulerError):
    """The scheduler answered a submission and said no (an invalid partition or option): no
    job was created, and the same script would be refused again (issue 13)."""

    def __init__(self, argv: list[str], message: str, output: str = "", why: str = "") -> None:
        super().__init__(argv, message, output)
        self.why = why or message


class SchedulerUnavailable(SchedulerError):
    """The scheduler did not answer (controller down, timeout): take no destructive action."""

    exit_code = EXIT_TEMPFAIL
