"""`oellm status` for sweeps: one row per job with when it started running, how long it ran,
its log and (for a failed job) its last log lines, filters by state, stage and name glob, and
a count per state. Built on `reconcile.status` (one look at SLURM per bundle); read-only.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .job_logs import current_link, log_file, marker_times, tail
from .metrics_store import latest_metrics
from .model import History, LockJob
from .reconcile import StatusRow, status
from .schedulers import FINISHED, SchedulerJob, row_time
from .selection import select_jobs
from .session import Session

# The order of the summary line; other states follow by count.
STATE_ORDER = ("COMPLETED", "RUNNING", "PENDING", "FAILED")
# A job that ended so is shown with its last log lines (`--tail`).
FAILED_STATES = frozenset(
    {"FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "LOST", "SUBMIT_FAILED"}
)


@dataclass(frozen=True)
class JobView:
    """One job as `oellm status` shows it (and `--json` lists it)."""

    job: str
    stage: str | None
    state: str
    attempt: int | None
    job_id: str | None
    reason: str
    last_event: str
    link: str | None
    started: str | None  # when it started running (not when it was submitted)
    ended: str | None
    run_seconds: int | None
    log: str | None  # log_path_current when the job has one, else the attempt's log file
    tail: tuple[str, ...]  # its last log lines, for a job that failed
    finished_by_event: bool  # a `finish` event ended it: shown COMPLETED whatever the exit
    scheduler_state: str  # the state as SLURM (or the record) has it
    progress: str | None = None  # training progress the last round read (Megatron jobs)
    metrics: Mapping[str, Any] | None = None  # the same, field by field (`--json`)


@dataclass(frozen=True)
class BundleStatus:
    bundle: str
    project: str
    scheduler_available: bool
    scheduler_error: str | None
    jobs: tuple[JobView, ...]

    def counts(self) -> Counter[str]:
        return Counter(job.state for job in self.jobs)


def build(
    session: Session,
    patterns: Sequence[str] = (),
    stages: Sequence[str] = (),
    states: Sequence[str] = (),
    tail_lines: int = 3,
    now: datetime | None = None,
) -> BundleStatus:
    now = now or datetime.now(timezone.utc)
    chosen = {job.name for job in select_jobs(session.bundle.jobs, patterns, stages)}
    rows, obs = status(session)
    history = session.history()
    wanted = {state.upper() for state in states}
    views = []
    for row in rows:
        if row.job not in chosen:
            continue
        view = _view(session, session.bundle.job(row.job), row, history, obs.by_id, now, tail_lines)
        if wanted and view.state.rstrip("?") not in wanted:
            continue
        views.append(view)
    return BundleStatus(
        str(session.bundle.path),
        session.bundle.project,
        obs.available,
        obs.error,
        tuple(views),
    )


def _view(
    session: Session,
    job: LockJob,
    row: StatusRow,
    history: History,
    by_id: Mapping[str, SchedulerJob],
    now: datetime,
    tail_lines: int,
) -> JobView:
    bundle = session.bundle
    latest = history.latest(job.name)
    state, reason = row.state, row.reason
    # Recorded as finished, or ended in this round's view with the event in its ledger.
    by_event = bool(
        latest is not None
        and latest.finish_requested
        and (latest.phase == "finished" or state.rstrip("?") in FINISHED)
    )
    if by_event and state.rstrip("?") != "COMPLETED":
        # Issue 14: a `finish` event counts as completed, whatever the exit code.
        assert latest is not None
        code = f", exit {latest.exit_code}" if latest.exit_code is not None else ""
        state, reason = "COMPLETED", f"finished by event: {latest.finish_requested}{code}"
    started = ended = None
    log: Path | None = None
    if row.job_id and latest is not None and latest.phase != "intent":
        times = marker_times(bundle, job, row.job_id)
        found = by_id.get(row.job_id)
        started = times.started or row_time(found.start if found else None)
        ended = times.ended or row_time(found.end if found else None)
        if ended is None and latest.phase == "finished" and latest.ended_at:
            ended = datetime.fromisoformat(latest.ended_at)
        log = log_file(bundle, job, row.job_id)
    link = current_link(bundle, job)
    shown_log = link if link is not None and log is not None and link.exists() else log
    run_seconds = None
    if started is not None:
        run_seconds = max(0, int(((ended or now) - started).total_seconds()))
    failed = state.rstrip("?") in FAILED_STATES or (
        state == "CANCELLED" and latest is not None and not latest.cancel_requested
    )
    lines = tuple(tail(log, tail_lines)) if failed and log is not None else ()
    # Training progress of Megatron jobs, as the last round read it from their logs.
    logged = latest_metrics(session.records, row.job, row.attempt)
    return JobView(
        job=row.job,
        stage=row.stage,
        state=state,
        attempt=row.attempt,
        job_id=row.job_id,
        reason=reason,
        last_event=row.last_event,
        link=row.link,
        started=started.isoformat() if started else None,
        ended=ended.isoformat() if ended else None,
        run_seconds=run_seconds,
        log=_shown(shown_log),
        tail=lines,
        finished_by_event=by_event,
        scheduler_state=row.state,
        progress=logged.summary() if logged else None,
        metrics=_metrics(logged),
    )


def _metrics(found: Any) -> dict[str, Any] | None:
    """The metrics `status --json` shows: the last logged values, not the curve's bookkeeping."""
    if found is None:
        return None
    data = dataclasses.asdict(found)
    for key in ("offsets", "seq_length", "stride", "points", "last_point"):
        data.pop(key, None)
    return data


def _shown(path: Path | None) -> str | None:
    """A path as the user can paste it: relative to here when it is below here."""
    if path is None:
        return None
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(counts: Counter[str]) -> str:
    """`120 jobs: 80 COMPLETED, 12 RUNNING, 20 PENDING, 8 FAILED`."""
    total = sum(counts.values())
    order = [s for s in STATE_ORDER if counts.get(s)]
    order += sorted((s for s in counts if s not in STATE_ORDER), key=lambda s: (-counts[s], s))
    parts = ", ".join(f"{counts[s]} {s}" for s in order)
    noun = "job" if total == 1 else "jobs"
    return f"{total} {noun}: {parts}" if parts else f"0 {noun}"
