"""A job's state as one round sees it: from its latest attempt record, the scheduler's
answer and the markers its script wrote (`Observation.seen`). A chained attempt's state is
its chain's (`chain.chain_current`).
"""

from __future__ import annotations

from .chain import chain_current
from .model import Attempt, Current, History, LockJob, Observation, recorded_state


def current(job: str, history: History, obs: Observation, lock: LockJob | None = None) -> Current:
    """`lock` is the job's lockfile entry: a chain needs its restart policy and script hash
    (without it, as for a job no longer in the bundle, a chain queues no further links)."""
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
            recorded_state(latest.final_state),
            success=latest.succeeded,
            job_id=ended_by(latest),
            exit_code=latest.exit_code,
            reason=latest.reason,
        )
    if latest.links and latest.phase == "submitted":
        return chain_current(latest, obs, lock, dropped=job in history.dropped)
    return obs.seen(latest.job_id, latest.tag, bool(latest.finish_requested))


def ended_by(attempt: Attempt) -> str | None:
    """The SLURM job whose end ended a finished attempt: the job itself, or for a chain the
    link that ended it as the attempt did (its record keeps link 1's id, for its tag)."""
    ran = [link for link in attempt.links if link.job_id and link.phase == "finished"]
    for link in reversed(ran):
        if link.state == attempt.final_state:
            return link.job_id
    return ran[-1].job_id if ran else attempt.job_id
