"""`oellm retry`: record a retry request for jobs that ended for good, under the state lock.

The command submits nothing itself: it writes `<state_dir>/jobs/<job>/retry.json` (the time,
the attempt it follows, the drop it undoes) and the next `oellm reconcile` submits each job
once (`retry.py`). It reads only the records, so it works while SLURM is away; a job whose
records still say it is in flight is never retried (a round records its end first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from oellm.errors import EXIT_DIFFERENT, EXIT_OK, EXIT_TEMPFAIL

from .actions import Action, Submit, Wait, main_action
from .decide import decide
from .lock import Busy, StateLock
from .model import History, Observation, RetryRequest
from .retry import pending
from .selection import is_glob, select_jobs

if TYPE_CHECKING:
    from .session import Session

Kind = Literal["failed", "cancelled"]
LOCK_WAIT_S = 60.0


@dataclass(frozen=True)
class Choice:
    """One job, and whether `oellm retry` would ask for a new attempt of it, and why."""

    job: str
    kind: Kind | None  # None: not retried
    why: str
    after: int = 0
    revives: str | None = None


def choose(name: str, history: History, action: Action) -> Choice:
    """Whether a job can be retried, from its records and this round's decision on them."""
    latest = history.latest(name)
    after = latest.attempt if latest is not None else 0
    if name in history.damaged:
        return Choice(name, None, f"its records are damaged: {history.damaged[name]}")
    if pending(history, name) is not None:
        return Choice(name, None, "a retry is requested already: the next round submits it")
    in_flight = latest is not None and latest.phase != "finished"
    if in_flight:
        assert latest is not None
        job_id = f", job {latest.job_id}" if latest.job_id else ""
        return Choice(
            name,
            None,
            f"in flight (attempt {latest.attempt}{job_id}): jobs in flight are "
            "not retried; `oellm cancel` it first, or let a round record its end",
        )
    drop = history.dropped.get(name)
    if drop is not None:
        return Choice(name, "cancelled", f"dropped: {drop.reason}", after, revives=drop.at)
    if latest is None:
        return Choice(name, None, f"not submitted yet ({action.reason})")
    if latest.succeeded:
        return Choice(name, None, "completed")
    if latest.cancel_requested:
        return Choice(name, "cancelled", f"cancelled: {latest.cancel_requested}", after)
    if isinstance(action, Submit) or not (isinstance(action, Wait) and action.settled):
        return Choice(name, None, f"runs again by itself: {action.reason}")
    kind: Kind = "cancelled" if latest.final_state == "CANCELLED" else "failed"
    return Choice(name, kind, f"{latest.final_state}: {action.reason}", after)


@dataclass(frozen=True)
class RetryReport:
    exit_code: int
    chosen: tuple[Choice, ...] = ()


def retry_jobs(
    session: Session,
    patterns: Sequence[str],
    say: Callable[[str], None],
    *,
    failed: bool = False,
    cancelled: bool = False,
    stages: Sequence[str] = (),
    dry_run: bool = False,
    lock_wait: float = LOCK_WAIT_S,
) -> RetryReport:
    selected = select_jobs(session.bundle.jobs, patterns, stages)
    kinds: set[Kind] = set()
    if failed:
        kinds.add("failed")
    if cancelled:
        kinds.add("cancelled")
    named = {p for p in patterns if not is_glob(p)}
    lock = StateLock(session.bundle.state_path)
    if not dry_run:
        try:
            lock.acquire(wait=lock_wait)
        except Busy as busy:
            say(f"{busy}; waited {lock_wait:g} s for it. Nothing was recorded: run it again")
            return RetryReport(EXIT_TEMPFAIL)
    try:
        history = session.history()
        now = datetime.now(timezone.utc)
        # From the records alone: a retry needs no answer from SLURM.
        actions = decide(
            session.bundle.jobs,
            history,
            Observation(asked=False, available=True),
            now,
            session.options,
        )
        by_job: dict[str, list[Action]] = {}
        for action in actions:
            by_job.setdefault(action.job, []).append(action)
        choices = [choose(job.name, history, main_action(by_job[job.name])) for job in selected]
        chosen = [c for c in choices if c.kind is not None and (not kinds or c.kind in kinds)]
        for choice in choices:
            if choice.job in named and choice not in chosen:
                why = choice.why if choice.kind is None else f"{choice.kind}, not selected"
                say(f"{choice.job}: not retried: {why}")
        if not chosen:
            say(_nothing(choices, kinds))
            return RetryReport(EXIT_OK)
        stamp = now.isoformat()
        for choice in chosen:
            if dry_run:
                say(f"would retry {choice.job}: {choice.why}")
                continue
            request = RetryRequest(choice.job, stamp, choice.after, choice.revives)
            lock.verify()
            session.records.request_retry(request)
            say(f"retry recorded for {choice.job} ({choice.why})")
        if dry_run:
            say(f"{len(chosen)} job{'s' if len(chosen) != 1 else ''} would be retried")
            return RetryReport(EXIT_OK, tuple(chosen))
        say("the next `oellm reconcile` submits them, once each")
        return RetryReport(EXIT_DIFFERENT, tuple(chosen))
    finally:
        if not dry_run:
            lock.release()


def _nothing(choices: Sequence[Choice], kinds: set[Kind]) -> str:
    if not choices:
        return "nothing to retry: no job selected"
    counts: dict[str, int] = {}
    for choice in choices:
        word = choice.kind or choice.why.split(":")[0].split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    shown = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    only = f" (only {' and '.join(sorted(kinds))} jobs)" if kinds else ""
    return f"nothing to retry{only} among {len(choices)} jobs: {shown}"
