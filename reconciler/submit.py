"""Submit: an intent record (fsynced), then sbatch, then the job id record, for an attempt and
for each link of a chain. A run killed between any two of these leaves a record from which the
next run finds the job by its tag, so nothing is submitted twice or lost.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import tags
from .actions import Submit
from .arrays import (
    array_spec,
    log_for,
    resubmit_args,
    task_id,
)
from .bundle import Bundle
from .current_log import point_current_log
from .errors import SchedulerError, SchedulerUnavailable, SubmissionRefused
from .folders import make_job_folders
from .model import ArrayGroup, Attempt, Link, LockJob
from .record_file import RecordExists
from .records import Records
from .refusal import refused
from .schedulers import Scheduler, Submission

# Fault injection for the exactly-once tests: the process kills itself at the named point.
CRASH_POINTS = (
    "before-intent",
    "after-intent",
    "after-sbatch",
    "after-record",
    "between-links",
    "link-after-sbatch",
)
# A link waits for the one before it to end, however it ended (TIMEOUT is the usual way), and
# SLURM removes it rather than keeping it pending forever if that dependency can never be met.
CHAIN_DEPENDENCY = ("--dependency=afterany:{after}", "--kill-on-invalid-dep=yes")


def crash_point(name: str) -> None:
    if os.environ.get("OELLM_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class RoundOutcome:
    acted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False
    refused: dict[str, str] = field(default_factory=dict)  # tag -> why sbatch refused it
    # Ready jobs the time budget left for the next round (budget.py), unrecorded.
    deferred: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Submitter:
    """What every submission of one round shares."""

    bundle: Bundle
    records: Records
    scheduler: Scheduler
    key: str
    now: Callable[[], datetime]
    note: Callable[[str], None]
    outcome: RoundOutcome
    # Called right before each sbatch: raises when this round no longer holds the state lock
    # (another round took it over), so that no submission happens outside the lock.
    fence: Callable[[], None] = lambda: None
    folders: set[Path] = field(default_factory=set)  # jobs' folders seen to exist this round

    def submit(self, action: Submit, latest: Attempt | None) -> Attempt | None:
        """Carry out a `submit`: a new attempt (and, for a chain, all its links), or the
        missing links of the chain in flight. Returns the newest record."""
        job = self.bundle.job(action.job)
        if action.link is None:
            record = self._start(job, action)
            first, after = 2, record.job_id if record is not None else None
        else:
            record = latest
            first, after = action.link, action.after
            assert record is not None and record.attempt == action.attempt, action
        if record is None or not record.links or (action.link is None and after is None):
            return record
        for number in range(first, record.chain_repeat + 1):
            crash_point("between-links")
            record, job_id = self._link(job, record, number, after)
            if job_id is None:
                break
            after = job_id
        return record

    def _start(self, job: LockJob, action: Submit) -> Attempt | None:
        tag = tags.attempt_tag(self.key, job.name, action.attempt)
        self._folders(job)
        crash_point("before-intent")
        stamp = self.now().isoformat()
        chained = job.chain_repeat > 1
        intent = dataclasses.replace(
            self._intent(job, action, tag, stamp),
            links=(Link(1, tag, "intent", stamp),) if chained else (),
            upstream_ids=action.upstream_ids,
        )
        if not self._create(intent):
            return None
        crash_point("after-intent")
        gate: tuple[str, ...] = ()
        if action.upstream_ids:
            # SLURM holds it until the upstream jobs complete, and cancels it if one fails.
            gate = (
                f"--dependency=afterok:{':'.join(action.upstream_ids)}",
                "--kill-on-invalid-dep=yes",
            )
        job_id, error = self._sbatch(job, tag, gate)
        if job_id is None and tag in self.outcome.refused:
            # Issue 13: refused for good, so nothing to look up; ended now, not retried.
            self.records.save(refused(intent, self.outcome.refused[tag], self.now().isoformat()))
            return None
        if job_id is None:
            failed = dataclasses.replace(intent, reason=error)
            self.records.save(failed.with_link(1, reason=error) if chained else failed)
            return None
        crash_point("after-sbatch")
        stamp = self.now().isoformat()
        record = dataclasses.replace(intent, phase="submitted", job_id=job_id, submitted_at=stamp)
        if chained:
            record = record.with_link(1, phase="submitted", job_id=job_id, submitted_at=stamp)
        self.records.save(record)
        crash_point("after-record")
        point_current_log(self.bundle, job, job_id)
        of = f" link 1/{job.chain_repeat}" if chained else ""
        self.note(
            f"submitted {job.name} attempt {action.attempt}{of} as job {job_id} ({action.reason})"
        )
        return record

    def _link(
        self, job: LockJob, record: Attempt, number: int, after: str | None
    ) -> tuple[Attempt, str | None]:
        """Queue link `number` of a chain behind job `after` (None: it has ended already)."""
        tries = sum(1 for link in record.links if link.link == number)
        tag = tags.link_tag(record.tag, number, tries)
        stamp = self.now().isoformat()
        record = dataclasses.replace(
            record, links=(*record.links, Link(number, tag, "intent", stamp, after=after))
        )
        self.records.save(record)
        extra = tuple(arg.format(after=after) for arg in CHAIN_DEPENDENCY) if after else ()
        job_id, error = self._sbatch(job, tag, extra)
        if job_id is None:
            record = record.with_link(number, reason=error)
            self.records.save(record)
            return record, None
        crash_point("link-after-sbatch")
        stamp = self.now().isoformat()
        record = record.with_link(number, phase="submitted", job_id=job_id, submitted_at=stamp)
        self.records.save(record)
        behind = f" after job {after}" if after else ""
        self.note(
            f"queued {job.name} attempt {record.attempt} link {number}/{record.chain_repeat} "
            f"as job {job_id}{behind}"
        )
        return record, job_id

    def submit_array(self, group: ArrayGroup, actions: Sequence[Submit]) -> dict[str, str]:
        """Carry out the `submit`s of several members of one array as one `sbatch --array`:
        an intent per member, all under one tag (`<tag>[<index>]`), then one sbatch, then
        each member's task id. A run killed in between finds the tasks by tag and index.
        Returns the task id of each member submitted."""
        jobs = [self.bundle.job(action.job) for action in actions]
        attempts = (f"{action.job}:{action.attempt}" for action in actions)
        tag = tags.array_tag(self.key, group.name, attempts)
        crash_point("before-intent")
        stamp = self.now().isoformat()
        planned = []
        for job, action in zip(jobs, actions, strict=True):
            assert job.array_index is not None
            self._folders(job)
            planned.append(self._intent(job, action, tags.member_tag(tag, job.array_index), stamp))
        self.fence()
        intents = []
        for intent, exists in zip(planned, self.records.create_many(planned), strict=True):
            if exists is None:
                intents.append(intent)
            else:
                self._recorded_meanwhile(intent, exists)
        crash_point("after-intent")
        written = {intent.job for intent in intents}
        pairs = [
            (job, action) for job, action in zip(jobs, actions, strict=True) if job.name in written
        ]
        if not pairs:
            return {}
        jobs, actions = [job for job, _ in pairs], [action for _, action in pairs]
        self._keep_scripts(jobs)
        indices = [job.array_index for job in jobs if job.array_index is not None]
        spec = array_spec(indices, group.throttle)
        job_id, error = self._run(
            jobs[0],
            self.bundle.path / group.script,
            tag,
            (f"--array={spec}",),
            f"array {group.name}",
        )
        if job_id is None:
            stamp, why = self.now().isoformat(), self.outcome.refused.get(tag)
            # Issue 13: a refused array created no task: every member ends now.
            ends = [
                refused(intent, why, stamp) if why else dataclasses.replace(intent, reason=error)
                for intent in intents
            ]
            self.records.write_batch(ends, [])
            return {}
        crash_point("after-sbatch")
        stamp = self.now().isoformat()
        tasks = {
            job.name: task_id(job_id, job.array_index)
            for job in jobs
            if job.array_index is not None
        }
        submitted = [
            dataclasses.replace(
                intent, phase="submitted", job_id=tasks[intent.job], submitted_at=stamp
            )
            for intent in intents
        ]
        # One sync for them all from BATCH_MIN members on; until then a member's record is
        # its intent, and the next round finds its task by tag.
        self.records.write_batch(submitted, [])
        for job, intent, action in zip(jobs, intents, actions, strict=True):
            task = tasks[job.name]
            point_current_log(self.bundle, job, task)
            self.note(
                f"submitted {job.name} attempt {intent.attempt} as task {task} of array "
                f"{group.name} ({action.reason})"
            )
        crash_point("after-record")
        return tasks

    def _keep_scripts(self, jobs: Sequence[LockJob]) -> None:
        """A copy of each member script an array task will run, named by its sha256 under the
        state dir: the array script falls back to it when a recompile removed the job from
        the bundle while its task was still queued (it then runs as it was compiled).

        A hard link to the bundle's file where the file system allows it: one metadata call
        per task rather than four, and a bundle's files are never written in place (a
        recompile replaces the bundle whole). The array script checks the sha256 before it
        runs the file either way."""
        folder = self.bundle.state_path / "scripts"
        folder.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            target = folder / f"{job.sha256}.sbatch"
            source = self.bundle.script_path(job)
            try:
                os.link(source, target)
                continue
            except FileExistsError:
                continue  # kept already (an earlier attempt, or a job with the same script)
            except OSError:
                pass  # another file system, or one without hard links: a copy
            if not target.exists():
                tmp = folder / f".{job.sha256}.{os.getpid()}"
                tmp.write_bytes(source.read_bytes())
                os.replace(tmp, target)

    def _create(self, intent: Attempt) -> bool:
        """Write a new attempt's intent, unless a record of that attempt exists already (only
        another round can have written it): then this round does not submit it."""
        self.fence()
        try:
            self.records.create(intent)
        except RecordExists as exists:
            self._recorded_meanwhile(intent, str(exists))
            return False
        return True

    def _recorded_meanwhile(self, intent: Attempt, path: str) -> None:
        self.outcome.errors.append(
            f"{intent.job}: attempt {intent.attempt} was recorded by another round "
            f"meanwhile ({path}); not submitted again"
        )

    def _intent(self, job: LockJob, action: Submit, tag: str, stamp: str) -> Attempt:
        """The record written before sbatch: a new attempt, found by `tag` if sbatch's answer
        is lost."""
        return Attempt(
            job=job.name,
            attempt=action.attempt,
            tag=tag,
            bundle_id=self.bundle.bundle_id,
            script_sha256=job.sha256,
            scheduler=self.scheduler.name,
            cause=action.cause or action.reason,
            phase="intent",
            intent_at=stamp,
            chain_repeat=job.chain_repeat,
        )

    def _folders(self, job: LockJob) -> None:
        # SLURM does not create the folder of --output; a missing one fails the job silently.
        make_job_folders(self.bundle, job, self.folders)

    def _sbatch(
        self, job: LockJob, tag: str, extra: tuple[str, ...]
    ) -> tuple[str | None, str | None]:
        """(job id, None), or (None, why) when the scheduler refused or did not answer; then
        the outcome is unknown and the intent's tag is looked up before anything is retried."""
        group = self.bundle.array_of(job)
        if group is None or job.array_index is None:
            return self._run(job, self.bundle.script_path(job), tag, extra)
        if not self.scheduler.arrays:
            # Its own script, as a plain job, logging where its task would.
            output = log_for(job.log_path, "%j", job.array_index)
            return self._run(job, self.bundle.script_path(job), tag, (f"--output={output}", *extra))
        script = self.bundle.path / group.script
        self._keep_scripts([job])
        job_id, error = self._run(job, script, tag, (*resubmit_args(job.array_index), *extra))
        # One task of an array: squeue and sacct name it `<array job id>_<index>`.
        return (None, error) if job_id is None else (task_id(job_id, job.array_index), None)

    def _run(
        self, job: LockJob, script: Path, tag: str, extra: tuple[str, ...], who: str = ""
    ) -> tuple[str | None, str | None]:
        """Submit `script` for `job` (`who`: what an error names, the job by default)."""
        excluded = self.records.excluded_nodes(job.name)
        if excluded:
            extra = (f"--exclude={','.join(excluded)}", *extra)
        array = job.array_group is not None and self.scheduler.arrays
        self.fence()
        submission = Submission(
            script=script.resolve(),
            tag=tag,
            # An array's script finds its members' scripts under SLURM_SUBMIT_DIR (the bundle);
            # the tasks run, and relative paths resolve, where every other job's do.
            workdir=self.bundle.path.resolve() if array else self.bundle.root,
            extra_args=extra,
            chdir=self.bundle.root if array else None,
        )
        try:
            return self.scheduler.submit(submission), None
        except SchedulerUnavailable as exc:
            self.outcome.unavailable = True
            self.outcome.errors.append(str(exc))
            return None, f"scheduler unavailable: {exc.message}"
        except SubmissionRefused as exc:
            self.outcome.refused[tag] = exc.why
            self.outcome.errors.append(f"{who or job.name}: sbatch refused it: {exc.why}")
            return None, f"submission refused: {exc.why}"
        except SchedulerError as exc:
            self.outcome.errors.append(f"{who or job.name}: {exc}")
            return None, f"submission failed: {exc.message}"
