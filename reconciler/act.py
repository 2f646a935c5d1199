"""Act: carry out decided actions, recording before and after each step that touches SLURM.

Records change first (a request, a link's outcome, a fired event), then one scancel for the
round, then submissions (`submit.py`: intent, sbatch, job id, for each link of a chain).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from oellm.errors import CommandError
from oellm.shell import run

from .bundle import Bundle
from .decide import Action
from .errors import SchedulerError, SchedulerUnavailable
from .observe import Observation
from .records import Attempt, Dropped, History, Link, LogState, Records
from .schedulers import Scheduler
from .submit import CRASH_POINTS, Outcome, Submitter, link_current, tag_for


def act(
    actions: Sequence[Action],
    bundle: Bundle,
    history: History,
    records: Records,
    scheduler: Scheduler,
    key: str,
    now: Callable[[], datetime],
    say: Callable[[str], None],
    obs: Observation | None = None,
    fence: Callable[[], None] | None = None,
) -> Outcome:
    outcome = Outcome()
    latest = {job: attempts[-1] for job, attempts in history.attempts.items() if attempts}

    def note(line: str) -> None:
        outcome.acted.append(line)
        say(line)

    def save(record: Attempt) -> None:
        records.save(record)
        latest[record.job] = record

    to_cancel: dict[str, str] = {}  # job id -> why
    refire: set[str] = set()  # jobs whose fired event could not be carried out this round
    bundle_jobs = {job.name for job in bundle.jobs}
    for action in actions:
        record = latest.get(action.job)
        stamp = now().isoformat()
        if action.kind == "state" and record is not None:
            save(dataclasses.replace(record, last_state=action.state))
        elif action.kind == "event" and record is not None:
            steps = _Steps(bundle, records, scheduler, note, outcome, action.queued_ids)
            fired = _event(action, record, stamp, steps)
            if fired is None:
                # The scheduler did not answer an exclude_node: nothing of this event is kept,
                # and its lines are read again next round, so it fires again then.
                refire.add(action.job)
            else:
                save(fired)
                to_cancel.update(steps.to_cancel)
        elif action.kind == "link" and record is not None:
            save(_link(action, record, stamp, note))
        elif action.kind == "adopt" and record is not None:
            adopted = dataclasses.replace(
                record,
                phase="submitted",
                job_id=action.job_id,
                submitted_at=record.submitted_at or stamp,
                unseen=0,
            )
            if adopted.links:
                adopted = adopted.with_link(
                    1, phase="submitted", job_id=action.job_id, submitted_at=stamp
                )
            save(adopted)
            note(f"adopted {action.job} attempt {record.attempt}: {action.reason}")
        elif action.kind == "recover":
            recovered = _recovered(action, bundle, scheduler.name, stamp)
            records.create(recovered)
            latest[action.job] = recovered
            note(f"recovered {action.job} attempt {action.attempt}: {action.reason}")
        elif action.kind == "finish" and record is not None:
            iteration = obs.progress.get(action.job) if obs is not None else None
            chained = bool(record.links)
            save(
                dataclasses.replace(
                    record,
                    phase="finished",
                    # A chain keeps its first link's id; its links hold the others.
                    job_id=record.job_id if chained else (action.job_id or record.job_id),
                    final_state=action.state,
                    exit_code=action.exit_code,
                    ended_at=stamp,
                    iteration=iteration if iteration is not None else record.iteration,
                    reason=action.reason if chained or action.state == "LOST" else record.reason,
                )
            )
            if _follows_chain(action, record, bundle_jobs):
                assert action.job_id is not None
                link_current(bundle, bundle.job(action.job), action.job_id)
            exit_text = f" (exit {action.exit_code})" if action.exit_code is not None else ""
            note(f"{action.job} attempt {record.attempt} {action.state}{exit_text}")
        elif action.kind == "unseen" and record is not None:
            save(dataclasses.replace(record, unseen=record.unseen + 1))
        elif action.kind == "lost" and record is not None:
            save(
                dataclasses.replace(
                    record,
                    phase="finished",
                    final_state="NOT_SUBMITTED",
                    ended_at=stamp,
                    reason=record.reason or action.reason,
                )
            )
            note(f"{action.job} attempt {record.attempt}: {action.reason}")
        elif action.kind == "drop":
            records.drop(Dropped(action.job, action.reason, stamp))
            note(f"dropped {action.job}: {action.reason}")
        elif action.kind == "cancel":
            if action.cause == "restart" and record is not None:
                save(dataclasses.replace(record, restart_requested=action.reason))
            elif action.cause == "condition" and record is not None and record.links:
                # Recorded, so that a chain between two links queues no further one.
                save(dataclasses.replace(record, cancel_requested=action.reason))
            elif action.cause == "prune":
                records.drop(Dropped(action.job, action.reason, stamp))
            for job_id in action.job_ids or ((action.job_id,) if action.job_id else ()):
                to_cancel.setdefault(job_id, f"{action.job}: {action.reason}")
        elif action.kind == "wait" and _follows_chain(action, record, bundle_jobs):
            # The link that runs now (or, below, the one that ended the chain):
            # `log_path_current` follows it along the chain.
            assert action.job_id is not None
            link_current(bundle, bundle.job(action.job), action.job_id)

    if obs is not None:
        # Only after the events of these lines are in the ledger: a crash re-reads, never skips.
        for job, read in obs.logs.items():
            record = latest.get(job)
            if record is None or job in refire:
                continue
            growth = obs.log_growth.get(job)
            records.save_log_state(
                job,
                record.attempt,
                LogState(
                    offsets=dict(read.offsets),
                    last_size=read.size,
                    last_growth=growth.isoformat() if growth else None,
                ),
            )

    if to_cancel:
        # Later jobs first, so that a queued link is gone before the one it waits for ends.
        # scancel sends its requests in parallel, so this is likely, not certain; a link that
        # starts in that instant is still cancelled by the same call.
        ids = sorted(to_cancel, key=_id_order, reverse=True)
        try:
            scheduler.cancel(ids)
            for job_id in ids:
                note(f"cancelled job {job_id} ({to_cancel[job_id]})")
        except SchedulerUnavailable as exc:
            outcome.unavailable = True
            outcome.errors.append(str(exc))
        except SchedulerError as exc:
            outcome.errors.append(str(exc))

    submitter = Submitter(
        bundle, records, scheduler, key, now, note, outcome, fence or (lambda: None)
    )
    pending = [a for a in actions if a.kind == "submit"]
    submitted: dict[str, str] = {}  # job -> job id, for `job:<name>` afterok references
    for group, members in _array_batches(pending, bundle, records, scheduler).items():
        if outcome.unavailable:
            break
        for action in members:
            pending.remove(action)
        submitted.update(submitter.submit_array(bundle.arrays[group], members))
    while pending and not outcome.unavailable:
        ready = [a for a in pending if _resolvable(a, submitted)]
        if not ready:
            break  # an upstream's submission failed this round: the next round retries
        for action in ready:
            pending.remove(action)
            behind = tuple(submitted.get(u.removeprefix("job:"), u) for u in action.upstream_ids)
            record = submitter.submit(
                dataclasses.replace(action, upstream_ids=behind), latest.get(action.job)
            )
            if record is not None:
                latest[action.job] = record
                if record.job_id:
                    submitted[action.job] = record.job_id
            if outcome.unavailable:
                break
    return outcome


def _recovered(action: Action, bundle: Bundle, scheduler: str, stamp: str) -> Attempt:
    """The record of a submission found in SLURM (by its tag) that had none: what SLURM says
    is taken as submitted now; the script is taken to be the bundle's current one."""
    assert action.attempt is not None and action.found
    job = bundle.job(action.job)
    first = action.found[0]
    # A chain's attempt tag is its first link's, whether or not SLURM still lists that link.
    tag = re.sub(r"\.link\d+(\.try\d+)?$", "", first[1]) if first[0] > 1 else first[1]
    chained = job.chain_repeat > 1 and job.array_group is None
    links = tuple(
        Link(number, link_tag, "submitted", stamp, job_id=job_id, submitted_at=stamp)
        for number, link_tag, job_id in action.found
    )
    return Attempt(
        job=job.name,
        attempt=action.attempt,
        tag=tag,
        bundle_id=bundle.bundle_id,
        script_sha256=job.sha256,
        scheduler=scheduler,
        cause=f"recovered from SLURM: {action.reason}",
        phase="submitted",
        intent_at=stamp,
        job_id=first[2],
        submitted_at=stamp,
        chain_repeat=job.chain_repeat if chained else 1,
        links=links if chained else (),
    )


def _array_batches(
    pending: Sequence[Action], bundle: Bundle, records: Records, scheduler: Scheduler
) -> dict[str, list[Action]]:
    """New attempts of members of one array, two or more, that can go as one `--array` job:
    not gated by SLURM dependencies and with no nodes to avoid (those go one by one)."""
    if not scheduler.arrays:
        return {}
    names = {job.name for job in bundle.jobs}
    batches: dict[str, list[Action]] = {}
    for action in pending:
        if action.link is not None or action.upstream_ids or action.job not in names:
            continue
        job = bundle.job(action.job)
        if job.array_group is None or records.excluded_nodes(job.name):
            continue
        batches.setdefault(job.array_group, []).append(action)
    return {group: members for group, members in batches.items() if len(members) > 1}


def _resolvable(action: Action, submitted: Mapping[str, str]) -> bool:
    """A submission queued behind a job of this same round waits until that one has an id."""
    waiting = {u.removeprefix("job:") for u in action.upstream_ids if u.startswith("job:")}
    return waiting <= set(submitted)


def _follows_chain(action: Action, record: Attempt | None, names: set[str]) -> bool:
    return bool(record is not None and record.links and action.job_id and action.job in names)


def _id_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", job_id)) or (0,)


def _link(action: Action, record: Attempt, stamp: str, note: Callable[[str], None]) -> Attempt:
    """Record what one link of a chain did, in the attempt's record."""
    assert action.link is not None
    if not any(link.link == action.link for link in record.links):
        return record  # written by an older round already
    change = action.cause
    if change == "adopt":
        note(f"adopted {action.job} attempt {record.attempt}: {action.reason}")
        return record.with_link(
            action.link, phase="submitted", job_id=action.job_id, submitted_at=stamp, unseen=0
        )
    if change == "unseen":
        unseen = max(link.unseen for link in record.links if link.link == action.link)
        return record.with_link(action.link, unseen=unseen + 1)
    if change == "lost":
        note(f"{action.job} attempt {record.attempt}: {action.reason}")
        return record.with_link(action.link, phase="finished", state="NOT_SUBMITTED")
    note(f"{action.job} attempt {record.attempt}: {action.reason}")
    return record.with_link(
        action.link,
        phase="finished",
        job_id=action.job_id,
        state=action.state,
        exit_code=action.exit_code,
        reason=action.detail,
    )


@dataclasses.dataclass(frozen=True)
class _Steps:
    """What the steps of a fired event act on."""

    bundle: Bundle
    records: Records
    scheduler: Scheduler
    note: Callable[[str], None]
    outcome: Outcome
    queued: tuple[str, ...]  # this attempt's jobs still pending in the queue
    # What the event cancels; the caller cancels it only once the event is recorded.
    to_cancel: dict[str, str] = dataclasses.field(default_factory=dict)

    def exclude(self, job: str, node: str) -> bool:
        """Record the node for every later submission of the job, and move the job's queued
        links off it now (`scontrol update`). Runs before the event is recorded, so a crash
        re-fires the event and repeats the update rather than losing it. False: the
        scheduler did not answer, and the event must fire again."""
        self.records.exclude_node(job, node)
        if not self.queued:
            return True
        nodes = self.records.excluded_nodes(job)
        try:
            self.scheduler.exclude(self.queued, nodes)
        except SchedulerUnavailable as exc:
            self.outcome.unavailable = True
            self.outcome.errors.append(str(exc))
            return False
        except SchedulerError as exc:
            # A link that started meanwhile cannot be moved; the pending ones still are.
            self.outcome.errors.append(f"{job}: {exc}")
            self.note(f"{job}: not every queued job could be moved off {','.join(nodes)}")
            return True
        self.note(f"{job}: queued job(s) {', '.join(self.queued)} now avoid {','.join(nodes)}")
        return True


def _event(action: Action, record: Attempt, stamp: str, steps: _Steps) -> Attempt | None:
    """Carry out one fired event's actions; return the attempt with the event in its ledger,
    or None when a step must be tried again (the event then fires again next round).

    Requests (restart, cancel, finish) are written into the attempt record, so a crash cannot
    lose them; `run`, `append_to_file` and `exclude_node` run at least once.
    """
    bundle, note, to_cancel = steps.bundle, steps.note, steps.to_cancel
    event = dict(action.event)
    fields = _fields(action, record, event)
    done: list[str] = []
    updated = record
    for step in event["actions"]:
        kind = step["kind"]
        why = step.get("reason") or f"{event['event']}: {event.get('line') or event.get('trigger')}"
        live = action.job_ids or ((record.job_id,) if record.job_id else ())
        if kind == "restart":
            updated = dataclasses.replace(updated, restart_requested=why)
            for job_id in live:
                to_cancel[job_id] = f"{record.job}: restart, {why}"
        elif kind == "cancel":
            updated = dataclasses.replace(updated, cancel_requested=why)
            for job_id in live:
                to_cancel[job_id] = f"{record.job}: {why}"
        elif kind == "finish":
            updated = dataclasses.replace(updated, finish_requested=why)
        elif kind == "append_to_file":
            path = bundle.resolve(_format(step["path"], fields))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(_format(step["line"], fields) + "\n")
        elif kind == "exclude_node":
            node = _format(step["node"], fields).strip()
            if node and not steps.exclude(record.job, node):
                return None
        elif kind == "run":
            ok = _run_hook(step["command"], fields, bundle)
            if not ok:
                steps.outcome.errors.append(f"{record.job}: event {event['event']}: command failed")
        done.append(kind)
    event["at"] = stamp
    event["done"] = done
    note(f"{record.job} attempt {record.attempt}: {action.reason} -> {', '.join(done)}")
    return dataclasses.replace(updated, events=(*updated.events, event))


def _fields(action: Action, record: Attempt, event: Mapping[str, Any]) -> dict[str, str]:
    fields = {
        "job": record.job,
        "attempt": str(record.attempt),
        "job_id": record.job_id or "",
        "event": str(event.get("event", "")),
        "line": str(event.get("line", "")),
        "trigger": str(event.get("trigger", "")),
    }
    for index, group in enumerate(event.get("groups", [])):
        fields[str(index)] = str(group)
    fields.update({str(k): str(v) for k, v in event.get("named", {}).items()})
    return fields


def _format(template: str, fields: Mapping[str, str]) -> str:
    """`{name}` fields from the event; unknown names stay as written."""
    return re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def _run_hook(command: str | list[str], fields: Mapping[str, str], bundle: Bundle) -> bool:
    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    env = {**os.environ, **{f"OELLM_{k.upper()}": v for k, v in fields.items()}}
    try:
        return run(argv, timeout=300, cwd=bundle.root, env=env).returncode == 0
    except CommandError:
        return False


__all__ = ["CRASH_POINTS", "Outcome", "Path", "act", "tag_for"]
