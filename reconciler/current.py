"""A job's state as one round sees it: from its latest attempt record, the scheduler's
answer and the markers its script wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from .observe import Observation
from .records import History
from .schedulers import FINISHED


@dataclass(frozen=True)
class Current:
    """A job's state as this run sees it."""

    state: str | None  # None: never submitted
    live: bool = False
    success: bool = False
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state is not None and not self.live


def current(job: str, history: History, obs: Observation) -> Current:
    latest = history.latest(job)
    in_flight = latest is not None and latest.phase != "finished"
    if job in history.dropped and not in_flight:
        return Current("DROPPED", reason=history.dropped[job].reason)
    if latest is None:
        return Current(None)
    if latest.phase == "finished":
        if latest.final_state == "NOT_SUBMITTED":
            return Current(None, reason=latest.reason)
        return Current(
            latest.final_state,
            success=latest.succeeded,
            job_id=latest.job_id,
            exit_code=latest.exit_code,
            reason=latest.reason,
        )
    job_id = latest.job_id
    row = obs.by_id.get(job_id) if job_id else obs.by_tag.get(latest.tag)
    if row is not None:
        job_id = row.job_id
    markers = obs.markers.get(job_id) if job_id else None
    finished_by_event = bool(latest.finish_requested)
    # The script's own exit marker is the last thing it writes: the attempt is over.
    if (
        markers is not None
        and markers.exit_code is not None
        and (row is None or row.state in FINISHED)
    ):
        ok = markers.exit_code == 0
        failed = row.state if row is not None and row.state != "COMPLETED" else "FAILED"
        return Current(
            "COMPLETED" if ok else failed,
            success=ok or finished_by_event,
            job_id=job_id,
            exit_code=markers.exit_code,
        )
    if row is None:
        return Current("UNKNOWN", live=True, job_id=job_id)
    if row.state in FINISHED:
        ok = row.state == "COMPLETED" and row.exit_code in (0, None)
        return Current(
            row.state, success=ok or finished_by_event, job_id=job_id, exit_code=row.exit_code
        )
    return Current(row.state, live=True, job_id=job_id, reason=row.reason)
