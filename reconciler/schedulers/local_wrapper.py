"""One local job as a SLURM batch step would run it. `LocalScheduler.submit` starts this module
detached (`python -m oellm.reconciler.schedulers.local_wrapper <spec.json>`); it gives
`bash <script>` SLURM's environment and an srun stub, runs it in a process group of its own,
enforces the time limit, forwards a cancel, and writes the outcome that `LocalScheduler.query`
reads. The record formats both sides share live here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

# SLURM reports a job whose batch step could not start (e.g. its --output folder is missing) as
# FAILED with ExitCode 0:53 and reason JobLaunchFailure (seen on SLURM 22.05); mirror it.
LAUNCH_FAILURE_SIGNAL = 53
# How often a job queued behind another looks whether that one has ended.
DEPENDENCY_POLL_S = 0.5


@dataclass(frozen=True)
class JobSpec:
    """Everything the wrapper needs, written by `submit` before it starts the wrapper. The
    environment is not here: the wrapper inherits it, so nothing secret lands on disk."""

    job_id: str
    name: str
    script: str  # the scheduler's own copy (sbatch, too, runs the script as it was at submission)
    workdir: str
    output: str
    error: str
    time_limit_s: float | None
    kill_wait_s: float
    submitted: str
    cpus_per_task: str | None = None
    # --dependency=afterany: start only once each of these jobs has ended (or is unknown, as
    # SLURM 22.05 runs a job whose afterany names no known job).
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended; one JSON file per job, written once, atomically."""

    job_id: str
    name: str
    state: str  # COMPLETED, FAILED, TIMEOUT or CANCELLED
    exit_code: int | None
    signal: int | None
    start: str | None
    end: str
    reason: str | None = None


@dataclass(frozen=True)
class LocalFiles:
    """The scheduler's files under `<state_dir>/local/`, one set per job id."""

    root: Path

    def spec(self, job_id: str) -> Path:
        return self.root / f"{job_id}.spec.json"

    def outcome(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def pid(self, job_id: str) -> Path:
        return self.root / f"{job_id}.pid.json"

    def cancel(self, job_id: str) -> Path:
        return self.root / f"{job_id}.cancel"

    def script(self, job_id: str) -> Path:
        return self.root / f"{job_id}.sbatch"

    def log(self, job_id: str) -> Path:
        return self.root / f"{job_id}.wrapper.log"

    @property
    def bin(self) -> Path:  # the srun stub, first on every job's PATH
        return self.root / "bin"


def stamp() -> str:
    # sacct's format (local time, seconds, no zone), so local and SLURM rows read alike.
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_spec(path: Path) -> JobSpec | None:
    data = read_json(path)
    try:
        if data is not None and isinstance(data.get("after"), list):
            data["after"] = tuple(str(job_id) for job_id in data["after"])
        return JobSpec(**data) if data is not None else None
    except TypeError:
        return None


def waiting_for(spec: JobSpec, files: LocalFiles) -> bool:
    """Whether the job still waits for a job of its dependency to end."""
    return any(
        files.spec(job_id).exists() and not files.outcome(job_id).exists() for job_id in spec.after
    )


def read_outcome(path: Path) -> JobOutcome | None:
    data = read_json(path)
    try:
        return JobOutcome(**data) if data is not None else None
    except TypeError:
        return None


# srun's options that take their value in the next word (unless written --opt=value or -Xvalue);
# any other word starting with "-" is a flag. The first other word starts the command.
_SRUN_VALUE_OPTIONS = (
    "-A|-c|-C|-D|-d|-e|-G|-i|-J|-m|-n|-N|-o|-p|-q|-t|-T|-W|-w|-x"
    "|--account|--chdir|--comment|--constraint|--cpu-bind|--cpus-per-gpu|--cpus-per-task"
    "|--dependency|--distribution|--error|--exclude|--export|--gpu-bind|--gpus|--gpus-per-node"
    "|--gpus-per-task|--gres|--het-group|--input|--job-name|--mem|--mem-per-cpu|--mem-per-gpu"
    "|--mpi|--nodelist|--nodes|--ntasks|--ntasks-per-node|--output|--partition|--qos"
    "|--reservation|--signal|--threads|--time|--wait"
)
SRUN_STUB = f"""#!/bin/sh
# srun for oellm's local scheduler: the job already is the one task on this machine, so drop
# srun's own options (the words before the first one that does not start with "-", or up to "--")
# and exec the command; "$@" passes every byte of every argument through.
while [ "$#" -gt 0 ]; do
  case $1 in
    --) shift; break ;;
    {_SRUN_VALUE_OPTIONS})
      if [ "$#" -lt 2 ]; then echo "srun (oellm local): option $1 needs a value" >&2; exit 1; fi
      shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ "$#" -eq 0 ]; then echo "srun (oellm local): no command given" >&2; exit 1; fi
exec "$@"
"""


def install_srun_stub(bin_dir: Path) -> None:
    """Write the srun stub unless it is there already (atomically: jobs may be running it)."""
    stub = bin_dir / "srun"
    with contextlib.suppress(OSError):
        if stub.read_text() == SRUN_STUB and os.access(stub, os.X_OK):
            return
    bin_dir.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".srun.", dir=bin_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(SRUN_STUB)
    os.chmod(tmp, 0o755)
    os.replace(tmp, stub)


def job_environment(base: Mapping[str, str], spec: JobSpec, bin_dir: Path) -> dict[str, str]:
    """What a batch script sees under SLURM, for one task on one node: the submitter's
    environment (sbatch's default --export=ALL) without its own SLURM_* variables, the job's,
    and the srun stub first on PATH."""
    env = {key: value for key, value in base.items() if not key.startswith("SLURM_")}
    host = socket.gethostname().split(".")[0]
    env.update(
        SLURM_JOB_ID=spec.job_id,
        SLURM_JOBID=spec.job_id,
        SLURM_JOB_NAME=spec.name,
        SLURM_SUBMIT_DIR=spec.workdir,
        SLURM_SUBMIT_HOST=host,
        SLURM_JOB_NODELIST=host,
        SLURMD_NODENAME=host,
        SLURM_NNODES="1",
        SLURM_JOB_NUM_NODES="1",
        SLURM_NTASKS="1",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
    )
    if spec.cpus_per_task:
        env["SLURM_CPUS_PER_TASK"] = spec.cpus_per_task
    env["PATH"] = os.pathsep.join([str(bin_dir), base.get("PATH", os.defpath)])
    return env


class _Supervisor:
    """Waits for the job's leader process while listening for SIGTERM/SIGINT/SIGHUP (a cancel)
    and SIGCHLD. Signals wake a `select` through `signal.set_wakeup_fd`, so neither a finished
    job nor a cancel waits for a polling tick, and a signal between two checks is never lost."""

    def __init__(self, cancel_file: Path) -> None:
        self.stop_signal: int | None = None
        # A cancel is also a file, for one that came before our pid was on record.
        self._cancel_file = cancel_file
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    @property
    def cancelled(self) -> bool:
        return self.stop_signal is not None or self._cancel_file.exists()

    def pause(self, seconds: float) -> None:
        """Sleep, woken early by a signal (a cancel)."""
        select.select([self._wake_r], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def wait(self, pid: int, until: float | None, stoppable: bool) -> int | None:
        """The leader's wait status, or None once `until` (monotonic) has passed or, when
        `stoppable`, a stop signal has come."""
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if stoppable and self.cancelled:
                return None
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return None
            # Signals end the select early; the cap bounds how late a cancel file is seen.
            select.select([self._wake_r], [], [], 5.0 if left is None else min(left, 5.0))
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _open_log(path: str) -> int:
    # Truncate, as SLURM does by default (--open-mode=truncate); never create the folder.
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)


def _start(spec: JobSpec, out_fd: int, err_fd: int, env: dict[str, str]) -> int:
    pid = os.fork()
    if pid == 0:  # the job: its own process group, so a kill reaches everything it started
        try:
            os.setpgid(0, 0)
            # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            os.chdir(spec.workdir)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.execvpe("bash", ["bash", spec.script], env)
        except BaseException as exc:
            os.write(2, f"oellm local: cannot start bash {spec.script}: {exc}\n".encode())
        finally:
            os._exit(127)
    # Also in the parent, so that a kill right after the fork already reaches the group; it
    # fails harmlessly when the child has exec'd (having set it itself) or is gone.
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    return pid


def _split(status: int) -> tuple[int, int]:
    """(exit code, signal) from a wait status, as sacct's ExitCode `code:signal`."""
    if os.WIFSIGNALED(status):
        return 0, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), 0


def run_job(spec: JobSpec, files: LocalFiles) -> JobOutcome:
    supervisor = _Supervisor(files.cancel(spec.job_id))  # first: from here on a cancel is caught
    while not supervisor.cancelled and waiting_for(spec, files):
        supervisor.pause(DEPENDENCY_POLL_S)
    if supervisor.cancelled:
        return JobOutcome(spec.job_id, spec.name, "CANCELLED", 0, 0, None, stamp())
    start = stamp()
    try:
        out_fd = _open_log(spec.output)
        err_fd = out_fd if spec.error == spec.output else _open_log(spec.error)
        os.stat(spec.workdir)
    except OSError as exc:
        reason = f"JobLaunchFailure: {exc.strerror}: {exc.filename}"
        return JobOutcome(
            spec.job_id, spec.name, "FAILED", 0, LAUNCH_FAILURE_SIGNAL, start, stamp(), reason
        )
    pid = _start(spec, out_fd, err_fd, job_environment(os.environ, spec, files.bin))
    os.close(out_fd)
    if err_fd != out_fd:
        os.close(err_fd)
    reaped = False
    killed_for: str | None = None
    try:
        deadline = None if spec.time_limit_s is None else time.monotonic() + spec.time_limit_s
        status = supervisor.wait(pid, deadline, stoppable=True)
        if status is None:
            # Time limit or scancel: SIGTERM to the whole job, SIGKILL after KillWait.
            killed_for = "CANCELLED" if supervisor.cancelled else "TIMEOUT"
            _killpg(pid, signal.SIGTERM)
            status = supervisor.wait(pid, time.monotonic() + spec.kill_wait_s, stoppable=False)
            if status is None:
                _killpg(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        reaped = True
        # Like SLURM, nothing a job started outlives the batch script. The group id cannot have
        # been reused: Linux does not hand out a pid that is still some group's id.
        _killpg(pid, signal.SIGKILL)
    finally:
        if not reaped:  # the wrapper itself failed: take the job down with it
            _killpg(pid, signal.SIGKILL)
    exit_code, signum = _split(status)
    state = killed_for or ("COMPLETED" if (exit_code, signum) == (0, 0) else "FAILED")
    why = {"FAILED": "NonZeroExitCode", "TIMEOUT": "TimeLimit"}.get(state)  # squeue's reasons
    return JobOutcome(spec.job_id, spec.name, state, exit_code, signum, start, stamp(), why)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m oellm.reconciler.schedulers.local_wrapper SPEC.json", flush=True)
        return 2
    spec_path = Path(argv[0])
    spec = read_spec(spec_path)
    if spec is None:
        print(f"oellm local: cannot read the job spec {spec_path}", flush=True)
        return 2
    files = LocalFiles(spec_path.parent)
    try:
        outcome = run_job(spec, files)
    except Exception as exc:
        traceback.print_exc()
        reason = f"local wrapper error: {type(exc).__name__}: {exc}"
        outcome = JobOutcome(spec.job_id, spec.name, "FAILED", None, None, None, stamp(), reason)
    write_json(files.outcome(spec.job_id), asdict(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
