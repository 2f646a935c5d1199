"""Act: carry out decided actions, recording before and after each step that touches SLURM.

A submission is an intent record (fsynced), then sbatch, then the job id record: a run killed
between any two of these leaves a record from which the next run finds the job by its tag.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .bundle import Bundle
from .decide import Action
from .errors import SchedulerError, SchedulerUnavailable
from .observe import Observation
from .records import Attempt, Dropped, History, LogState, Records
from .schedulers import Scheduler, Submission

# Fault injection for the exactly-once tests: the process kills itself at the named point.
CRASH_POINTS = ("before-intent", "after-intent", "after-sbatch", "after-record")


def _crash_point(name: str) -> None:
    if os.environ.get("OELLM_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class Outcome:
    acted: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    unavailable: bool = False


def tag_for(key: str, job: str, attempt: int) -> str:
    return f"oellm.{key}.{job}.{attempt}"


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
    for action in actions:
        record = latest.get(action.job)
        stamp = now().isoformat()
        if action.kind == "state" and record is not None:
            save(dataclasses.replace(record, last_state=action.state))
        elif action.kind == "event" and record is not None:
            save(_event(action, record, bundle, records, stamp, note, to_cancel, outcome))
        elif action.kind == "adopt" and record is not None:
            save(
                dataclasses.replace(
                    record,
                    phase="submitted",
                    job_id=action.job_id,
                    submitted_at=record.submitted_at or stamp,
                    unseen=0,
                )
            )
            note(f"adopted {action.job} attempt {record.attempt}: {action.reason}")
        elif action.kind == "finish" and record is not None:
            iteration = obs.progress.get(action.job) if obs is not None else None
            save(
                dataclasses.replace(
                    record,
                    phase="finished",
                    job_id=action.job_id or record.job_id,
                    final_state=action.state,
                    exit_code=action.exit_code,
                    ended_at=stamp,
                    iteration=iteration if iteration is not None else record.iteration,
                    reason=record.reason if action.state != "LOST" else action.reason,
                )
            )
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
        elif action.kind == "cancel" and action.job_id:
            if action.cause == "restart" and record is not None:
                save(dataclasses.replace(record, restart_requested=action.reason))
            elif action.cause == "prune":
                records.drop(Dropped(action.job, action.reason, stamp))
            to_cancel.setdefault(action.job_id, f"{action.job}: {action.reason}")

    if obs is not None:
        # Only after the events of these lines are in the ledger: a crash re-reads, never skips.
        for job, read in obs.logs.items():
            record = latest.get(job)
            if record is None:
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
        try:
            scheduler.cancel(sorted(to_cancel))
            for job_id, why in sorted(to_cancel.items()):
                note(f"cancelled job {job_id} ({why})")
        except SchedulerUnavailable as exc:
            outcome.unavailable = True
            outcome.errors.append(str(exc))
        except SchedulerError as exc:
            outcome.errors.append(str(exc))

    for action in actions:
        if action.kind != "submit" or outcome.unavailable:
            continue
        _submit(action, bundle, records, scheduler, key, now, note, outcome)
    return outcome


def _event(
    action: Action,
    record: Attempt,
    bundle: Bundle,
    records: Records,
    stamp: str,
    note: Callable[[str], None],
    to_cancel: dict[str, str],
    outcome: Outcome,
) -> Attempt:
    """Carry out one fired event's actions; return the attempt with the event in its ledger.

    Requests (restart, cancel, finish) are written into the attempt record, so a crash cannot
    lose them; `run` and `append_to_file` run at least once.
    """
    event = dict(action.event)
    fields = _fields(action, record, event)
    done: list[str] = []
    updated = record
    for step in event["actions"]:
        kind = step["kind"]
        why = step.get("reason") or f"{event['event']}: {event.get('line') or event.get('trigger')}"
        if kind == "restart":
            updated = dataclasses.replace(updated, restart_requested=why)
            if record.job_id:
                to_cancel[record.job_id] = f"{record.job}: restart, {why}"
        elif kind == "cancel":
            updated = dataclasses.replace(updated, cancel_requested=why)
            if record.job_id:
                to_cancel[record.job_id] = f"{record.job}: {why}"
        elif kind == "finish":
            updated = dataclasses.replace(updated, finish_requested=why)
        elif kind == "append_to_file":
            path = bundle.resolve(_format(step["path"], fields))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(_format(step["line"], fields) + "\n")
        elif kind == "exclude_node":
            node = _format(step["node"], fields).strip()
            if node:
                records.exclude_node(record.job, node)
        elif kind == "run":
            ok = _run_hook(step["command"], fields, bundle)
            if not ok:
                outcome.errors.append(f"{record.job}: event {event['event']}: command failed")
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
    from .runner import run

    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    env = {**os.environ, **{f"OELLM_{k.upper()}": v for k, v in fields.items()}}
    try:
        return run(argv, timeout=300, cwd=bundle.root, env=env).returncode == 0
    except SchedulerError:
        return False


def _submit(
    action: Action,
    bundle: Bundle,
    records: Records,
    scheduler: Scheduler,
    key: str,
    now: Callable[[], datetime],
    note: Callable[[str], None],
    outcome: Outcome,
) -> None:
    job = bundle.job(action.job)
    assert action.attempt is not None
    tag = tag_for(key, job.name, action.attempt)
    # SLURM does not create the folder of --output; a missing one fails the job silently.
    log = bundle.resolve(job.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    bundle.resolve(job.output_dir).mkdir(parents=True, exist_ok=True)
    _crash_point("before-intent")
    intent = Attempt(
        job=job.name,
        attempt=action.attempt,
        tag=tag,
        bundle_id=bundle.bundle_id,
        script_sha256=job.sha256,
        scheduler=scheduler.name,
        cause=action.cause or action.reason,
        phase="intent",
        intent_at=now().isoformat(),
    )
    records.save(intent)
    _crash_point("after-intent")
    excluded = records.excluded_nodes(job.name)
    extra = (f"--exclude={','.join(excluded)}",) if excluded else ()
    submission = Submission(
        script=bundle.script_path(job).resolve(), tag=tag, workdir=bundle.root, extra_args=extra
    )
    try:
        job_id = scheduler.submit(submission)
    except SchedulerUnavailable as exc:
        records.save(dataclasses.replace(intent, reason=f"scheduler unavailable: {exc.message}"))
        outcome.unavailable = True
        outcome.errors.append(str(exc))
        return
    except SchedulerError as exc:
        records.save(dataclasses.replace(intent, reason=f"submission failed: {exc.message}"))
        outcome.errors.append(f"{job.name}: {exc}")
        return
    _crash_point("after-sbatch")
    records.save(
        dataclasses.replace(
            intent, phase="submitted", job_id=job_id, submitted_at=now().isoformat()
        )
    )
    _crash_point("after-record")
    _link_current(bundle, job.log_path, job.log_path_current, job_id)
    note(f"submitted {job.name} attempt {action.attempt} as job {job_id} ({action.reason})")


def _link_current(bundle: Bundle, log_path: str, current: str | None, job_id: str) -> None:
    """Point `log_path_current` at this attempt's log, so tools can follow one stable name."""
    if not current:
        return
    target = bundle.resolve(log_path.replace("%j", job_id).replace("%A", job_id))
    link = bundle.resolve(current)
    tmp = link.with_name(f".{link.name}.{job_id}")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)
    except OSError:
        pass  # a convenience link; never worth failing a submission for


__all__ = ["CRASH_POINTS", "Outcome", "Path", "act", "tag_for"]
