"""The local scheduler: runs bundle scripts as detached processes on this machine, so a laptop
without SLURM can try a bundle end to end (DESIGN.md: the embedded default where sbatch is absent).
It keeps its state in files under `<state_dir>/local/`; `local_wrapper` supervises each job.

One job is: `<id>.spec.json` (written before the start), `<id>.sbatch` (the script as submitted),
`<id>.pid.json` (the wrapper's pid and /proc start time), `<id>.wrapper.log`, `<id>.cancel` (a
cancel request) and, once it has ended, `<id>.json` (the outcome). The job runs `bash <script>` in
a process group of its own under the wrapper, which started in a session of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import re
import shlex
import signal
import socket
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import cast, get_args

from oellm.errors import CommandError
from oellm.reconciler import tags
from oellm.reconciler.errors import SchedulerError, SubmissionRefused
from oellm.reconciler.schedulers import JobState, SchedulerJob, Submission
from oellm.reconciler.schedulers.local_wrapper import (
    JobOutcome,
    JobSpec,
    LocalFiles,
    install_srun_stub,
    read_json,
    read_outcome,
    read_spec,
    stamp,
    waiting_for,
    write_json,
)
from oellm.shell import spawn_detached

WRAPPER_MODULE = "oellm.reconciler.schedulers.local_wrapper"
# SLURM's default KillWait: seconds between SIGTERM and SIGKILL at a time limit or cancel.
DEFAULT_KILL_WAIT_S = 30.0
# A spec without a pid record is a submission in progress; past this age its submitter died.
SUBMIT_GRACE_S = 60.0
# What a script's `#SBATCH` lines (or `extra_args`) may set that the local run honours.
_OPTIONS = {
    "-o": "output",
    "--output": "output",
    "-e": "error",
    "--error": "error",
    "-t": "time",
    "--time": "time",
    "-J": "job-name",
    "--job-name": "job-name",
    "-c": "cpus-per-task",
    "--cpus-per-task": "cpus-per-task",
    "-d": "dependency",
    "--dependency": "dependency",
}
_STATES = frozenset(get_args(JobState))
_JOB_ID = re.compile(r"[0-9]+")
_PATTERN = re.compile(r"%(\d*)([%jxuNA])")
_PROC = Path("/proc")
_HOST = socket.gethostname().split(".")[0]


class LocalScheduler:
    """The `Scheduler` Protocol on this machine: a job is a detached `local_wrapper` process."""

    name: str = "local"
    arrays: bool = False  # each member of a `slurm.array` group runs as a job of its own

    def __init__(self, state_dir: Path, *, kill_wait_s: float = DEFAULT_KILL_WAIT_S) -> None:
        self.files = LocalFiles(Path(state_dir).absolute() / "local")
        self.kill_wait_s = kill_wait_s

    def submit(self, submission: Submission) -> str:
        argv = ["oellm-local", "submit", str(submission.script)]  # how errors show the call
        workdir = submission.workdir.absolute()
        script = workdir / submission.script
        try:
            text = script.read_bytes()
        except OSError as exc:
            raise SchedulerError(argv, f"cannot read the script: {exc.strerror}") from exc
        if not workdir.is_dir():
            raise SchedulerError(argv, f"the working folder {workdir} does not exist")
        options = pick_options(read_directives(text.decode("utf-8", "replace")))
        options.update(pick_options(list(submission.extra_args)))  # the command line wins
        try:
            time_limit = parse_time_limit(options["time"]) if "time" in options else None
            after = parse_dependency(options.get("dependency", ""))
        except ValueError as exc:
            # Nothing was started: the same script would be refused again (like sbatch's no).
            raise SubmissionRefused(argv, str(exc)) from exc
        # Named as sbatch names it (`%x`, SLURM_JOB_NAME), read back as the tag by `query`.
        name = tags.job_name(submission.tag) if submission.tag else None
        name = name or options.get("job-name") or script.name
        try:
            return self._start(workdir, text, options, time_limit, name, after)
        except OSError as exc:  # the state dir cannot be written: as if sbatch had failed
            raise SchedulerError(argv, f"{exc.strerror}: {exc.filename}") from exc

    def _start(
        self,
        workdir: Path,
        text: bytes,
        options: dict[str, str],
        time_limit: float | None,
        name: str,
        after: tuple[str, ...] = (),
    ) -> str:
        self.files.root.mkdir(parents=True, exist_ok=True)
        install_srun_stub(self.files.bin)
        job_id = self._next_id()
        output = workdir / substitute(options.get("output", "slurm-%j.out"), job_id, name)
        error = output
        if "error" in options:
            error = workdir / substitute(options["error"], job_id, name)
        copy = self.files.script(job_id)
        copy.write_bytes(text)
        spec = JobSpec(
            job_id=job_id,
            name=name,
            script=str(copy),
            workdir=str(workdir),
            output=str(output),
            error=str(error),
            time_limit_s=time_limit,
            kill_wait_s=self.kill_wait_s,
            submitted=stamp(),
            cpus_per_task=options.get("cpus-per-task"),
            after=after,
        )
        write_json(self.files.spec(job_id), asdict(spec))
        try:
            # The wrapper inherits our environment (sbatch's default --export=ALL) and adds the
            # job's. Its cwd is the scheduler's folder, so that a package folder in the workdir
            # cannot shadow its imports; it moves the job itself into the workdir.
            pid = spawn_detached(
                [sys.executable, "-m", WRAPPER_MODULE, str(self.files.spec(job_id))],
                cwd=self.files.root,
                env=None,
                stdout_path=self.files.log(job_id),
            )
        except CommandError as exc:
            self.files.spec(job_id).unlink(missing_ok=True)  # never started: no such job
            raise SchedulerError(exc.argv, exc.message, exc.output) from exc
        write_json(self.files.pid(job_id), {"pid": pid, "starttime": proc_starttime(pid)})
        return job_id

    def query(
        self, tag_prefix: str, since: datetime | None, known_ids: Collection[str] = ()
    ) -> list[SchedulerJob]:
        """Every job of this state dir whose tag starts with `tag_prefix` or whose id is in
        `known_ids`, named by its tag as SLURM's rows are. `since` is not needed: finished jobs
        stay listed until their files go."""
        known = set(known_ids)
        rows = []
        for path in self.files.root.glob("*.spec.json"):
            spec = read_spec(path)
            if spec is None:
                continue
            if tags.tag_of(spec.name).startswith(tag_prefix) or spec.job_id in known:
                row = self._row(spec, path)
                rows.append(replace(row, name=tags.tag_of(row.name)))
        return sorted(rows, key=lambda row: int(row.job_id))

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Ask each wrapper to stop its job (SIGTERM; it records CANCELLED). The request is also
        left as a file, so that a wrapper that has not started its job yet does not start it."""
        for job_id in job_ids:
            if not _JOB_ID.fullmatch(job_id) or not self.files.spec(job_id).exists():
                continue
            if self.files.outcome(job_id).exists():
                continue
            try:
                self.files.cancel(job_id).touch()
            except OSError as exc:
                raise SchedulerError(["oellm-local", "cancel", job_id], str(exc)) from exc
            pid = self._live_pid(job_id)
            if pid is not None:
                # The wrapper leads its own session and process group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)

    def exclude(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        """Jobs here run on this one machine: there is no other node to send them to."""

    def _row(self, spec: JobSpec, spec_path: Path) -> SchedulerJob:
        outcome = read_outcome(self.files.outcome(spec.job_id))
        if outcome is not None:
            return _finished(outcome)
        if self._live_pid(spec.job_id) is not None:
            if waiting_for(spec, self.files):
                return SchedulerJob(
                    spec.job_id,
                    spec.name,
                    "PENDING",
                    "PENDING",
                    reason="Dependency",
                    source="local",
                )
            return SchedulerJob(
                job_id=spec.job_id,
                name=spec.name,
                state="RUNNING",
                raw_state="RUNNING",
                start=spec.submitted,
                nodes=_HOST,
                source="local",
            )
        if not self.files.pid(spec.job_id).exists() and _age(spec_path) < SUBMIT_GRACE_S:
            return SchedulerJob(
                spec.job_id, spec.name, "PENDING", "PENDING", reason="starting", source="local"
            )
        outcome = read_outcome(self.files.outcome(spec.job_id))  # it may just have ended
        if outcome is not None:
            return _finished(outcome)
        # The wrapper is gone without an outcome (killed, machine rebooted).
        state: JobState = "CANCELLED" if self.files.cancel(spec.job_id).exists() else "FAILED"
        return SchedulerJob(spec.job_id, spec.name, state, state, reason="lost", source="local")

    def _live_pid(self, job_id: str) -> int | None:
        """The wrapper's pid if it still runs: same pid and same start time as at the spawn."""
        data = read_json(self.files.pid(job_id))
        if data is None or not isinstance(data.get("pid"), int):
            return None
        pid: int = data["pid"]
        recorded = data.get("starttime")
        if not _PROC.is_dir():  # no /proc (macOS): existence only, pid reuse goes unnoticed
            try:
                os.kill(pid, 0)
            except OSError:  # gone, or another user's process holds the pid now
                return None
            return pid
        now = proc_starttime(pid)
        return pid if now is not None and now == recorded else None

    def _next_id(self) -> str:
        """The next job id, from a counter file under an exclusive lock (many submitters)."""
        fd = os.open(self.files.root / "counter", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).decode("ascii", "replace").strip()
            number = int(raw) + 1 if raw.isdigit() else 1
            while self.files.spec(str(number)).exists():  # a damaged counter must not reuse ids
                number += 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{number}\n".encode())
            # Claim the id before the lock goes, so a concurrent submitter never sees it free.
            self.files.spec(str(number)).touch()
            return str(number)
        finally:
            os.close(fd)  # releases the lock


def _finished(outcome: JobOutcome) -> SchedulerJob:
    return SchedulerJob(
        job_id=outcome.job_id,
        name=outcome.name,
        state=cast(JobState, outcome.state if outcome.state in _STATES else "OTHER"),
        raw_state=outcome.state,
        reason=outcome.reason,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        start=outcome.start,
        end=outcome.end,
        nodes=_HOST,
        source="local",
    )


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def proc_starttime(pid: int) -> int | None:
    """The process start time in clock ticks since boot (/proc/<pid>/stat field 22), or None
    when it is gone, a zombie, or there is no /proc. It tells a pid apart from its reuse."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def read_directives(script: str) -> list[str]:
    """The words of a script's `#SBATCH` lines. Like sbatch, stop at the first line that is
    neither blank nor a comment; a `#` starts a comment inside a directive line too."""
    words: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        rest = line[len("#SBATCH") :]
        if line.startswith("#SBATCH") and (not rest or rest[0].isspace()):
            try:
                words.extend(shlex.split(rest, comments=True))
            except ValueError:  # an unbalanced quote: take the words as they stand
                words.extend(rest.split())
    return words


def pick_options(words: list[str]) -> dict[str, str]:
    """The options in `_OPTIONS`, by long name, from `--opt=value`, `--opt value`, `-Xvalue` or
    `-X value`; the last one wins, as with sbatch. Other words are ignored."""
    found: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("--"):
            key, equals, value = word.partition("=")
            attached = bool(equals)
        else:
            key, value = word[:2], word[2:]
            attached = bool(value)
        if key not in _OPTIONS:
            continue
        if not attached and index < len(words):
            value = words[index]
            index += 1
        found[_OPTIONS[key]] = value
    return found


def parse_dependency(text: str) -> tuple[str, ...]:
    """The job ids of `afterany:<id>[:<id>...]`, the one kind of --dependency the local
    scheduler keeps (what chains use); empty for no dependency."""
    if not text:
        return ()
    kind, _, ids = text.partition(":")
    parts = tuple(ids.split(":")) if ids else ()
    if kind != "afterany" or not parts or not all(_JOB_ID.fullmatch(p) for p in parts):
        raise ValueError(
            f"the local scheduler supports only --dependency=afterany:<id>[:<id>...], not {text!r}"
        )
    return parts


def parse_time_limit(text: str) -> float | None:
    """Seconds from a SLURM time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; None
    for no limit (`0`, `UNLIMITED`, `INFINITE`). SLURM rounds seconds up to whole minutes;
    here they are kept, so a test can use a limit of a few seconds."""
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    days_text, dash, clock = value.rpartition("-") if "-" in value else ("", "", value)
    parts = clock.split(":")
    numbers = [days_text] if dash else []
    numbers += parts
    if not 1 <= len(parts) <= 3 or not all(n.isascii() and n.isdigit() for n in numbers):
        raise ValueError(f"invalid time limit {text!r}: use M, M:S, H:M:S, D-H, D-H:M or D-H:M:S")
    units = (3600, 60, 1) if dash else {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(parts)]
    seconds = (int(days_text) * 86400 if dash else 0) + sum(
        int(part) * unit for part, unit in zip(parts, units, strict=False)
    )
    return float(seconds) if seconds else None


def substitute(pattern: str, job_id: str, name: str) -> str:
    """sbatch's filename patterns for one job: %j and %A (job id), %x (job name), %u (user),
    %N (host), %% (a percent sign); a number after % pads with zeros (%5j)."""

    def one(match: re.Match[str]) -> str:
        width, letter = match.groups()
        if letter in "jA":
            return job_id.zfill(int(width or 0))
        if letter == "u":
            return getpass.getuser()
        return {"x": name, "N": _HOST, "%": "%"}[letter]

    return _PATTERN.sub(one, pattern)
