"""Fakes at the subprocess boundary for the reconciler's tests: a runner that answers from a
table, and the real local SLURM's answers as recorded in tests/slurm/recorded (each file
says the command it recorded)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oellm.shell import Completed

RECORDED = Path(__file__).resolve().parents[1] / "slurm" / "recorded"
STDOUT_MARK = "# --- stdout ---"
STDERR_MARK = "# --- stderr ---"


@dataclass(frozen=True)
class Recording:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def completed(self) -> Completed:
        return Completed(tuple(self.command.split()), self.returncode, self.stdout, self.stderr)


def recorded(name: str) -> Recording:
    """A file as tests/slurm/recorded/README.md describes it: line 1 `# <command>`, more `#`
    notes; with markers, line 2 gives the exit status and stdout/stderr follow their markers."""
    lines = (RECORDED / name).read_text(encoding="utf-8").splitlines(keepends=True)
    command = lines[0].removeprefix("# ").strip()
    if STDOUT_MARK not in (line.strip() for line in lines):
        body = "".join(line for line in lines if not line.startswith("#"))
        return Recording(command, 0, body, "")
    status = int(lines[1].removeprefix("# exit status:").split(";", 1)[0])
    marks = [line.strip() for line in lines]
    out_at, err_at = marks.index(STDOUT_MARK), marks.index(STDERR_MARK)
    return Recording(
        command, status, "".join(lines[out_at + 1 : err_at]), "".join(lines[err_at + 1 :])
    )


_CALLS = threading.Lock()


@dataclass
class FakeRun:
    """Stands in for shell.run: answers from a table keyed by program name, records calls
    (and the environment each was given)."""

    answers: dict[str, Completed]
    calls: list[tuple[list[str], float, Path | None]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        with _CALLS:  # squeue and sacct are asked from two threads at once
            self.calls.append((list(argv), timeout, cwd))
            self.envs.append(env)
        answer = self.answers[argv[0]]
        return Completed(tuple(argv), answer.returncode, answer.stdout, answer.stderr)

    def programs(self) -> list[str]:
        return [argv[0] for argv, _, _ in self.calls]


def ok(stdout: str = "") -> Completed:
    return Completed((), 0, stdout, "")
