"""Act: carry out decided actions, recording before and after each step that touches SLURM.

A submission is an intent record (fsynced), then sbatch, then the job id record: a run killed
between any two of these leaves a record from which the next run finds the job by its tag.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from .bundle import Bundle
from .decide import Action
from .errors import SchedulerError, SchedulerUnavailable
from .records import Attempt, Dropped, History, Records
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
) -> Outcome:
    outcome = Outcome()
    latest = {job: attempts[-1] for job, attempts in history.attempts.items() if attempts}

    def note(line: str) -> None:
        outcome.acted.append(line)
        say(line)

    for action in actions:
        record = latest.get(action.job)
        stamp = now().isoformat()
        if action.kind == "adopt" and record is not None:
            records.save(
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
            records.save(
                dataclasses.replace(
                    record,
                    phase="finished",
                    job_id=action.job_id or record.job_id,
                    final_state=action.state,
                    exit_code=action.exit_code,
                    ended_at=stamp,
                    reason=record.reason if action.state != "LOST" else action.reason,
                )
            )
            exit_text = f" (exit {action.exit_code})" if action.exit_code is not None else ""
            note(f"{action.job} attempt {record.attempt} {action.state}{exit_text}")
        elif action.kind == "unseen" and record is not None:
            records.save(dataclasses.replace(record, unseen=record.unseen + 1))
        elif action.kind == "lost" and record is not None:
            records.save(
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

    cancels = [a for a in actions if a.kind == "cancel" and a.job_id]
    if cancels:
        try:
            scheduler.cancel([a.job_id for a in cancels if a.job_id])
            for a in cancels:
                note(f"cancelled {a.job} job {a.job_id}: {a.reason}")
                record = latest.get(a.job)
                if record is not None:
                    records.save(dataclasses.replace(record, reason=a.reason))
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
    submission = Submission(script=bundle.script_path(job).resolve(), tag=tag, workdir=bundle.root)
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
