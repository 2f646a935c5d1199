"""Decisions about a chained attempt (`job.chain_repeat: N`): N SLURM jobs of one script, each
queued behind the one before with `--dependency=afterany`, so a run that needs several wall-time
limits goes on without waiting for cron.

Each link is submitted exactly once, like an attempt: an intent record, then sbatch, then the
job id. A round records what each link did (`link` observations), then gives the chain one
main action: queue the links still missing (after a crash between two links, or a submission
that never arrived), cancel the links that are no longer needed, or wait.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from .actions import Cancel, Fired, LinkChange, LinkSeen, MainAction, Observed, Submit
from .model import (
    Attempt,
    ChainNow,
    Current,
    Link,
    LinkNow,
    LockJob,
    Observation,
    recorded_state,
)
from .policy import SUBMIT_TRIES, UNSEEN_LIMIT

# A link that ends so lets its chain go on: a link is expected to run out of wall time, and
# the next one resumes from the checkpoint (the Megatron backend loads what it saves).
CHAIN_GOES_ON = frozenset({"COMPLETED", "TIMEOUT"})


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
            recorded_state(record.state),
            False,
            record.job_id,
            record.exit_code,
            record.reason,
        )
    if record.phase == "intent" and record.tag not in obs.by_tag:
        return LinkNow(record.link, record, tries, None, True, None)
    seen = obs.seen(record.job_id, record.tag)
    return LinkNow(
        record.link, record, tries, seen.state, seen.live, seen.job_id, seen.exit_code, seen.reason
    )


def _restart_on(lock: LockJob | None) -> frozenset[str]:
    found: Collection[str] = lock.restart.on if lock is not None else ()
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


def link_records(
    latest: Attempt, chain: ChainNow, obs: Observation, now: datetime, grace: timedelta
) -> list[LinkSeen]:
    """What to record about each link this round: a submission found by its tag, one not
    (yet) seen, one that never arrived, a link that ended."""
    if not obs.available:
        return []
    out: list[LinkSeen] = []
    for link in chain.links:
        record = link.record
        where = chain.describe(link.number)
        if record.phase == "intent":
            if link.state is not None:
                out.append(_link(latest, link, "adopt", f"found {record.tag} as job {link.job_id}"))
                if link.ended:
                    out.append(_ended(latest, link, where))
                continue
            age = now - datetime.fromisoformat(record.intent_at)
            if record.unseen + 1 >= 2 and age >= grace:
                out.append(_link(latest, link, "lost", f"{where}: {record.tag} never arrived"))
            else:
                out.append(_link(latest, link, "unseen", f"{where}: {record.tag} not seen yet"))
        elif record.phase == "submitted":
            if link.state == "UNKNOWN":
                if record.unseen + 1 >= UNSEEN_LIMIT:
                    gone = f"{where}: scheduler lost job {record.job_id}"
                    out.append(_link(latest, link, "ended", gone, state="LOST"))
                else:
                    why = f"{where}: scheduler has no record of job {record.job_id}"
                    out.append(_link(latest, link, "unseen", why))
            elif link.ended:
                out.append(_ended(latest, link, where))
    return out


def _ended(latest: Attempt, link: LinkNow, where: str) -> LinkSeen:
    said = link.reason if link.reason and link.reason not in ("None", link.state) else None
    why = f" ({said})" if said else ""
    return _link(
        latest, link, "ended", f"{where} ended {link.state}{why}", state=link.state, detail=said
    )


def _link(
    latest: Attempt,
    link: LinkNow,
    change: LinkChange,
    reason: str,
    state: str | None = None,
    detail: str | None = None,
) -> LinkSeen:
    return LinkSeen(
        latest.job,
        reason,
        attempt=latest.attempt,
        link=link.number,
        change=change,
        job_id=link.job_id,
        state=state,
        exit_code=link.exit_code if state not in (None, "LOST") else None,
        detail=detail,
    )


def chain_main(
    latest: Attempt, now_state: Current, seen: Sequence[Observed], obs: Observation
) -> MainAction | None:
    """The chain's own main action when it has one: cancel the links no longer needed, or
    queue the missing ones. None: the job's usual rules apply (finish, cancel conditions,
    requests, wait)."""
    chain = now_state.chain
    if chain is None or now_state.terminal or not obs.available:
        return None
    name, attempt = latest.job, latest.attempt
    finish_at = chain.finish_link or _finish_fired(seen)
    if finish_at is not None:
        later = tuple(x.job_id for x in reversed(chain.live) if x.number > finish_at and x.job_id)
        if later:
            return Cancel(
                name,
                f"finish event on {chain.describe(finish_at)}: cancelling the links after it",
                attempt=attempt,
                job_id=later[-1],
                origin="finish",
                job_ids=later,
            )
        return None
    if chain.broken is not None and chain.live_ids:
        link = chain.broken
        return Cancel(
            name,
            f"{chain.describe(link.number)} ended {link.state}: cancelling the rest of the chain",
            attempt=attempt,
            job_id=chain.live_ids[-1],
            origin="chain",
            job_ids=chain.live_ids,
        )
    stuck = next((x for x in chain.live if x.never_satisfied), None)
    if stuck is not None:
        # SLURM never starts it (it cancels it itself under --kill-on-invalid-dep=yes).
        doomed = tuple(
            x.job_id for x in reversed(chain.live) if x.number >= stuck.number and x.job_id
        )
        return Cancel(
            name,
            f"{chain.describe(stuck.number)} can never start (DependencyNeverSatisfied): "
            "cancelling it and the links after it",
            attempt=attempt,
            job_id=stuck.job_id,
            origin="chain",
            job_ids=doomed,
        )
    if chain.next_link is not None:
        behind = f" behind job {chain.after}" if chain.after else ""
        retry = chain.links[-1].state == "NOT_SUBMITTED"
        what = "retry" if retry else "resume the chain"
        return Submit(
            name,
            f"queue {chain.describe(chain.next_link)}{behind} ({what})",
            attempt=attempt,
            link=chain.next_link,
            after=chain.after,
            cause=latest.cause,
        )
    return None


def _finish_fired(seen: Sequence[Observed]) -> int | None:
    """The link a `finish` event fired on in this very round, so the links after it are
    cancelled now rather than one round later (when the next may already be running)."""
    links = [
        int(a.event["link"])
        for a in seen
        if isinstance(a, Fired)
        and a.event.get("link") is not None
        and any(step.get("kind") == "finish" for step in a.event.get("actions", ()))
    ]
    return min(links) if links else None


def shown(now_state: Current) -> str:
    """What a `wait` adds for a chain: which link the state is of, and why no further link
    will be queued, when that is so."""
    chain = now_state.chain
    if chain is None or now_state.link is None:
        return ""
    text = f" ({chain.describe(now_state.link)})"
    if chain.no_more:
        text += f"; no further links: {chain.no_more}"
    return text
