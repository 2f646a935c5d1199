"""`oellm retry` in the decisions: a request (`<state_dir>/jobs/<job>/retry.json`) asks for one
new attempt of a job that ended for good (failed with its budget spent, cancelled, dropped,
refused by sbatch), with fresh restart budgets.

The request names the attempt it follows. It is pending while that attempt is still the
job's latest and has ended: the next round submits the job once (its intent names the
request), after which the request is older than the latest attempt and only marks where the
restart budgets start counting again. A job in flight is never retried. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses

from .model import History, RetryRequest

RETRIED = "retried by the user"


def pending(history: History, job: str) -> RetryRequest | None:
    """The job's retry request, if the next round must act on it."""
    request = history.retries.get(job)
    if request is None:
        return None
    latest = history.latest(job)
    if latest is None:
        return request if request.after == 0 else None
    if latest.attempt != request.after or latest.phase != "finished":
        return None
    return request


def budget_start(history: History, job: str) -> int:
    """Restart budgets count only the attempts after this number (0: all of them)."""
    request = history.retries.get(job)
    return request.after if request is not None else 0


def cause(request: RetryRequest) -> str:
    after = f" after attempt {request.after}" if request.after else ""
    return f"{RETRIED} (requested at {request.at}{after})"


def revived(history: History) -> History:
    """The history without the drops a retry request undid (`revives` names the drop's time;
    a later `oellm cancel` writes a new drop, which stands)."""
    undone = {
        job
        for job, drop in history.dropped.items()
        if (request := history.retries.get(job)) is not None and request.revives == drop.at
    }
    if not undone:
        return history
    kept = {job: drop for job, drop in history.dropped.items() if job not in undone}
    return dataclasses.replace(history, dropped=kept)
