"""The steps of a fired event (`events.py` finds it in the logs): requests written into the
attempt's record, and steps that act outside the records and run at least once: a command
(`run`), a line appended to a file, a node the job's queued and later submissions avoid.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from oellm.errors import CommandError
from oellm.shell import run

from .actions import Fired
from .bundle import Bundle
from .errors import SchedulerError, SchedulerUnavailable
from .model import Attempt
from .records import Records
from .schedulers import Scheduler
from .submit import RoundOutcome


@dataclasses.dataclass(frozen=True)
class Steps:
    """What the steps of a fired event act on."""

    bundle: Bundle
    records: Records
    scheduler: Scheduler
    note: Callable[[str], None]
    outcome: RoundOutcome
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


def event(action: Fired, record: Attempt, stamp: str, steps: Steps) -> Attempt | None:
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


def _fields(action: Fired, record: Attempt, event: Mapping[str, Any]) -> dict[str, str]:
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
