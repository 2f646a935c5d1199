"""W&B offline runs synced from the login node (`oellm reconcile --sync-wandb`): compute nodes
often have no network, so Megatron logs with WANDB_MODE=offline and this step uploads.

Each job that logs to W&B (`wandb` in its lock entry) writes its runs under
`<dir>/wandb/offline-run-<time>-<run id>/` (wandb.init(dir=<dir>) adds the `wandb` folder); one
per attempt or chain link, all with the job's run id, so W&B shows one run. A run folder is
synced when what it holds changed since its last sync (the size and newest change time of its
files, kept in `<state_dir>/wandb-sync.json`). Only when the `wandb` command is installed, with
a time limit, and never failing the round: problems come back as text.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import CommandError
from oellm.shell import Completed, run

from .bundle import Bundle
from .model import History
from .record_file import write_atomic

log = logging.getLogger("oellm.wandb")

STATE_NAME = "wandb-sync.json"
TIMEOUT_S = 600.0  # one `wandb sync` of one run folder

Runner = Callable[[Sequence[str], float], Completed]


@dataclass(frozen=True)
class SyncReport:
    synced: tuple[str, ...] = ()  # run folders uploaded this round
    errors: tuple[str, ...] = ()
    skipped: str | None = None  # why nothing was tried (no wandb command, no W&B jobs)


def offline_runs(folder: Path, run_id: str) -> list[Path]:
    found: list[Path] = []
    for base in (folder / "wandb", folder):
        if base.is_dir():
            found.extend(p for p in base.glob(f"offline-run-*-{run_id}") if p.is_dir())
    return sorted(set(found))


def signature(run_dir: Path) -> str:
    """Changes whenever a file of the run grows or is written."""
    size, newest, count = 0, 0, 0
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name.endswith(".synced"):  # written by `wandb sync` itself
                continue
            try:
                info = os.stat(os.path.join(root, name))
            except OSError:
                continue
            size += info.st_size
            newest = max(newest, info.st_mtime_ns)
            count += 1
    return f"{count}:{size}:{newest}"


def sync(
    bundle: Bundle, history: History, runner: Runner | None = None, command: str | None = None
) -> SyncReport:
    """Sync the offline runs of every job with an attempt that changed since the last sync."""
    jobs = [j for j in bundle.jobs if j.wandb and j.name in history.attempts]
    if not jobs:
        return SyncReport(skipped="no job of this bundle that ran logs to W&B")
    wandb = command or shutil.which("wandb")
    if wandb is None:
        return SyncReport(skipped="the wandb command is not installed here")
    state_path = bundle.state_path / STATE_NAME
    state = _load(state_path)
    synced: list[str] = []
    errors: list[str] = []
    call = runner or _run
    for job in jobs:
        assert job.wandb is not None
        folder = bundle.resolve(job.wandb["dir"])
        for run_dir in offline_runs(folder, job.wandb["run_id"]):
            key = str(run_dir)
            now = signature(run_dir)
            if state.get(key) == now:
                continue
            argv = [wandb, "sync", key]
            try:
                done = call(argv, TIMEOUT_S)
            except CommandError as exc:
                errors.append(f"{job.name}: wandb sync failed: {exc}")
                continue
            if done.returncode != 0:
                output = (done.stderr or done.stdout).strip().splitlines()
                errors.append(
                    f"{job.name}: wandb sync {key} exited {done.returncode}"
                    + (f": {output[-1]}" if output else "")
                )
                continue
            state[key] = now
            synced.append(key)
    if synced:
        try:
            write_atomic(state_path, state)
        except OSError as exc:
            errors.append(f"cannot record the synced W&B runs in {state_path}: {exc}")
    return SyncReport(tuple(synced), tuple(errors))


def _run(argv: Sequence[str], timeout: float) -> Completed:
    return run(argv, timeout=timeout)


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Only a cache of what was uploaded: without it, runs are synced again.
        log.warning("%s: ignored (%s)", path, exc)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def sync_round(
    session: Any, say: Callable[[str], None], warn: Callable[[str], None], held: bool
) -> None:
    """The `--sync-wandb` step after a round. `held`: the caller holds the state lock (with
    --wait); otherwise it is taken here, and the step is skipped while another round runs."""
    from .lock import Busy, StateLock

    lock = None if held else StateLock(session.bundle.state_path)
    if lock is not None:
        try:
            lock.acquire()
        except Busy:
            log.info("W&B sync skipped: another reconcile holds the state")
            return
    try:
        report = sync(session.bundle, session.history(read_completed=False))
    finally:
        if lock is not None:
            lock.release()
    if report.skipped:
        log.info("W&B sync skipped: %s", report.skipped)
    for folder in report.synced:
        say(f"synced W&B run {folder}")
    for error in report.errors:
        warn(f"warning: {error}")
