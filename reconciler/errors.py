"""The reconciler's errors: data, rendered by the CLI.

`ReconcileError` is a user-facing problem with the bundle or the state (exit 2);
`SchedulerUnavailable` means SLURM could not be asked or did not answer (exit 75, retry later).
"""

from __future__ import annotations


class ReconcileError(Exception):
    """A problem the user must fix: a bad bundle, a damaged state file, a bad argument."""

    def __init__(self, message: str, path: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = path
        self.hint = hint
        super().__init__(message)

    def render(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return text + (f"\n  hint: {self.hint}" if self.hint else "")


class SchedulerError(Exception):
    """A scheduler command failed; carries the command and what it printed."""

    def __init__(self, argv: list[str], message: str, output: str = "") -> None:
        self.argv = argv
        self.message = message
        self.output = output
        shown = " ".join(argv)
        super().__init__(f"{shown}: {message}" + (f"\n{output.strip()}" if output.strip() else ""))


class SchedulerUnavailable(SchedulerError):
    """The scheduler did not answer (controller down, timeout): take no destructive action."""
