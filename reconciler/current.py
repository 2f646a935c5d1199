"""A job's state as one round sees it: from its latest attempt record, the scheduler's
answer and the markers its script wrote. A chained attempt (`job.chain_repeat`) is a row of
SLURM jobs; its state is the state of its first link that has not ended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from .bundle import LockJob
from .observe import Observation
from .policy import SUBMIT_TRIES
from .records import Attempt, History, Link
from .schedulers import FINISHED

# A link that ends so lets its chain go on: a link is expected to run out of wall time, and
# the next one resumes from the checkpoint (the Megatron backend loads what it saves).
CHAIN_GOES_ON = frozenset({"COMPLETED", "TIMEOUT"})
# squeue's reason for a job whose dependency failed; with --kill-on-invalid-dep=yes SLURM
# cancels it and keeps the reason (seen on SLURM 22.05.8).
NEVER_SATISFIED = "DependencyNeverSatisfied"


@dataclass(frozen=True)
class LinkNow:
    """One link of a chain as this round sees it."""

    number: int
    record: Link
    tries: int  # records of this link number: a submission that never arrived is retried
    state: str | None  # None: the submission is not confirmed yet
    live: bool
    job_id: str | None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.state is not None and not self.live

    @property
    def never_satisfied(self) -> bool:
        return bool(self.reason and NEVER_SATISFIED in self.reason)


@dataclass(frozen=True)
class ChainNow:
    """A chained attempt as this round sees it: each link, and what the chain does next."""

    length: int  # links it queues (job.chain_repeat at submission; less when cut short)
    links: tuple[LinkNow, ...]  # the newest record of each link number, in order
    broken: LinkNow | None  # the first link that ended in a state that stops the chain
    finish_link: int | None  # a `finish` event fired on this link: later links are not needed
    no_more: str | None  # why no further link is queued (a request, a changed script, ...)
    cut: str | None  # why the chain is shorter than asked (a link that could not be queued)
    next_link: int | None  # the link to queue now (a resumed or retried submission)
    after: str | None  # the job id that link is queued behind, when it is still live

    @property
    def live(self) -> tuple[LinkNow, ...]:
        return tuple(link for link in self.links if not link.ended)

    @property
    def live_ids(self) -> tuple[str, ...]:
        """Every live link's job id, later links first (the order to cancel them in)."""
        return tuple(link.job_id for link in reversed(self.live) if link.job_id)

    @property
    def current(self) -> LinkNow | None:
        live = self.live
        return live[0] if live else None

    @property
    def over(self) -> bool:
        return not self.live and self.next_link is None

    def describe(self, link: int) -> str:
        return f"link {link}/{self.length}"


@dataclass(frozen=True)
class Current:
    """A job's state as this run sees it."""

    state: str | None  # None: never submitted
    live: bool = False
    success: bool = False
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    # Every job of the attempt still queued or running (a chain's live links, later first).
    live_ids: tuple[str, ...] = ()
    chain: ChainNow | None = None
    link: int | None = None  # chains: the link `state` is of

    @property
    def terminal(self) -> bool:
        return self.state is not None and not self.live


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
            latest.final_state,
            success=latest.succeeded,
            job_id=ended_by(latest),
            exit_code=latest.exit_code,
            reason=latest.reason,
        )
    if latest.links and latest.phase == "submitted":
        return chain_current(latest, obs, lock, dropped=job in history.dropped)
    return observed(latest.job_id, latest.tag, obs, bool(latest.finish_requested))


def ended_by(attempt: Attempt) -> str | None:
    """The SLURM job whose end ended a finished attempt: the job itself, or for a chain the
    link that ended it as the attempt did (its record keeps link 1's id, for its tag)."""
    ran = [link for link in attempt.links if link.job_id and link.phase == "finished"]
    for link in reversed(ran):
        if link.state == attempt.final_state:
            return link.job_id
    return ran[-1].job_id if ran else attempt.job_id


def observed(job_id: str | None, tag: str, obs: Observation, finished_by_event: bool) -> Current:
    """One SLURM job in flight: by its id, or by its tag while the id is not recorded."""
    row = obs.by_id.get(job_id) if job_id else obs.by_tag.get(tag)
    if row is not None:
        job_id = row.job_id
    markers = obs.markers.get(job_id) if job_id else None
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
            reason=row.reason if row is not None else None,
        )
    if row is None:
        return Current("UNKNOWN", live=True, job_id=job_id, live_ids=_ids(job_id))
    if row.state in FINISHED:
        ok = row.state == "COMPLETED" and row.exit_code in (0, None)
        return Current(
            row.state,
            success=ok or finished_by_event,
            job_id=job_id,
            exit_code=row.exit_code,
            reason=row.reason,
        )
    return Current(row.state, live=True, job_id=job_id, reason=row.reason, live_ids=_ids(job_id))


def _ids(job_id: str | None) -> tuple[str, ...]:
    return (job_id,) if job_id else ()


def chain_now(
    attempt: Attempt, obs: Observation, lock: LockJob | None, dropped: bool = False
) -> ChainNow:
    newest: dict[int, Link] = {}
    tries: Counter[int] = Counter()
    for record in attempt.links:
        newest[record.link] = record
        tries[record.link] += 1
    links = tuple(_link_now(newest[n], tries[n], obs) for n in sorted(newest))
    length, cut = attempt.chain_repeat, None
    for link in links:
        if link.state == "NOT_SUBMITTED" and link.tries >= SUBMIT_TRIES:
            length = link.number - 1
            cut = f"link {link.number} not queued after {link.tries} tries ({link.record.reason})"
            break
    links = tuple(link for link in links if link.number <= length)
    goes_on = CHAIN_GOES_ON | _restart_on(lock)
    broken = next(
        (
            link
            for link in links
            if link.ended and link.state != "NOT_SUBMITTED" and link.state not in goes_on
        ),
        None,
    )
    finish_link = _finish_link(attempt, links) if attempt.finish_requested else None
    requested = attempt.restart_requested or attempt.cancel_requested
    no_more: str | None = None
    if requested:
        no_more = requested
    elif dropped:
        no_more = "cancelled by the user"
    elif lock is None:
        no_more = "removed from the bundle"
    elif lock.sha256 != attempt.script_sha256:
        no_more = "the script changed; the next attempt runs the new one"
    next_link, after = None, None
    last = links[-1] if links else None
    if last is not None and not (broken or finish_link or no_more) and last.state is not None:
        if last.state == "NOT_SUBMITTED":
            next_link = last.number
            before = links[-2] if len(links) > 1 else None
            after = before.job_id if before is not None and before.live else None
        elif last.number < length:
            next_link = last.number + 1
            after = last.job_id if last.live else None
    return ChainNow(length, links, broken, finish_link, no_more, cut, next_link, after)


def _link_now(record: Link, tries: int, obs: Observation) -> LinkNow:
    if record.phase == "finished":
        return LinkNow(
            record.link,
            record,
            tries,
            record.state,
            False,
            record.job_id,
            record.exit_code,
            record.reason,
        )
    if record.phase == "intent" and record.tag not in obs.by_tag:
        return LinkNow(record.link, record, tries, None, True, None)
    seen = observed(record.job_id, record.tag, obs, finished_by_event=False)
    return LinkNow(
        record.link, record, tries, seen.state, seen.live, seen.job_id, seen.exit_code, seen.reason
    )


def _restart_on(lock: LockJob | None) -> frozenset[str]:
    found: Collection[str] = lock.restart.get("on", ()) if lock is not None else ()
    return frozenset(found)


def _finish_link(attempt: Attempt, links: tuple[LinkNow, ...]) -> int:
    """The first link a `finish` event fired on; an event without a link (fired before the
    attempt was a chain) counts for the last link that started."""
    fired = [
        int(event["link"])
        for event in attempt.events
        if event.get("link") is not None
        and any(step.get("kind") == "finish" for step in event.get("actions", ()))
    ]
    if fired:
        return min(fired)
    started = [link.number for link in links if link.job_id]
    return max(started) if started else 1


def chain_current(
    attempt: Attempt, obs: Observation, lock: LockJob | None, dropped: bool = False
) -> Current:
    chain = chain_now(attempt, obs, lock, dropped)
    if chain.over:
        return _chain_end(chain)
    link = chain.current
    if link is None:  # nothing live: the next link is about to be queued
        return Current(
            "PENDING",
            live=True,
            reason=f"{chain.describe(chain.next_link or 0)} not queued yet",
            chain=chain,
            link=chain.next_link,
        )
    return Current(
        link.state or "UNKNOWN",
        live=True,
        job_id=link.job_id,
        reason=link.reason,
        live_ids=chain.live_ids,
        chain=chain,
        link=link.number,
    )


def _chain_end(chain: ChainNow) -> Current:
    """How a chain that has nothing live and nothing left to queue ended."""
    ran = [link for link in chain.links if link.ended and link.state != "NOT_SUBMITTED"]
    if chain.finish_link is not None:
        at = next((link for link in ran if link.number == chain.finish_link), None)
        at = at or (ran[-1] if ran else None)
        return Current(
            at.state if at else "COMPLETED",
            success=True,
            job_id=at.job_id if at else None,
            exit_code=at.exit_code if at else None,
            reason=f"finish event on {chain.describe(chain.finish_link)}",
            chain=chain,
            link=at.number if at else None,
        )
    if chain.broken is not None:
        link = chain.broken
        why = f" ({link.reason})" if link.reason and link.reason != link.state else ""
        return Current(
            link.state,
            job_id=link.job_id,
            exit_code=link.exit_code,
            reason=f"{chain.describe(link.number)} ended {link.state}{why}",
            chain=chain,
            link=link.number,
        )
    last = ran[-1] if ran else None
    complete = last is not None and last.number == chain.length
    if not complete and chain.no_more:
        # Stopped before its last link (a request, the user, a new script): never a success.
        return Current(
            "CANCELLED",
            job_id=last.job_id if last else None,
            reason=f"chain stopped after {chain.describe(last.number if last else 0)}: "
            f"{chain.no_more}",
            chain=chain,
            link=last.number if last else None,
        )
    if last is None:
        return Current("NOT_SUBMITTED", reason=chain.no_more, chain=chain)
    ok = last.state == "COMPLETED" and last.exit_code in (0, None)
    return Current(
        last.state,
        success=ok,
        job_id=last.job_id,
        exit_code=last.exit_code,
        reason=f"{chain.describe(last.number)} ended {last.state}"
        + (f"; {chain.cut}" if chain.cut else ""),
        chain=chain,
        link=last.number,
    )
