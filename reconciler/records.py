"""The reconciler's records on the shared filesystem: one file per job attempt, written
atomically (temp file, fsync, rename), so a run killed at any instant leaves either the old
record or the new one, never half of one. A new attempt's first record (its intent) is created
exclusively: a round never overwrites another round's intent.

    <state_dir>/jobs/<job>/attempt-0001.json   intent, then job id, then outcome
    <state_dir>/jobs/<job>/dropped.json        cancelled before it was ever submitted
    <state_dir>/jobs/<job>/retry.json          `oellm retry`: a new attempt after this one

Records are read strictly (`codec.decode`): one that does not check out is reported with its
file, and its job gets no action until the user has looked at it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .codec import RecordInvalid, decode
from .errors import ReconcileError

log = logging.getLogger("oellm.records")
T = TypeVar("T")

Phase = Literal["intent", "submitted", "finished"]
_ATTEMPT = re.compile(r"attempt-(\d{4,})\.json")


@dataclass(frozen=True)
class Link:
    """One SLURM job of a chained attempt (`job.chain_repeat`): its own intent, id and outcome,
    so each link is submitted exactly once. Link 1 carries the attempt's own tag."""

    link: int  # 1-based position in the chain
    tag: str
    phase: Phase
    intent_at: str
    job_id: str | None = None
    after: str | None = None  # the job id it was queued behind (--dependency=afterany)
    submitted_at: str | None = None
    state: str | None = None  # final state, once it ended
    exit_code: int | None = None
    reason: str | None = None  # why it ended as it did (squeue's reason), or why it was not
    unseen: int = 0


@dataclass(frozen=True)
class Attempt:
    job: str
    attempt: int
    tag: str
    bundle_id: str
    script_sha256: str
    scheduler: str
    cause: str
    phase: Phase
    intent_at: str
    job_id: str | None = None
    submitted_at: str | None = None
    final_state: str | None = None
    exit_code: int | None = None
    ended_at: str | None = None
    reason: str | None = None
    unseen: int = 0  # runs in which the scheduler answered but had no record of it
    last_state: str | None = None  # the last state observed, to see transitions
    nodes: str | None = None
    iteration: int | None = None  # progress (checkpoint iteration) when the attempt ended
    # Requests made by events; persisted before acting, so a crash cannot lose them.
    restart_requested: str | None = None
    cancel_requested: str | None = None
    finish_requested: str | None = None
    # The attempt's ledger of fired events: what fired, on which line, and what was done.
    events: tuple[dict[str, Any], ...] = ()
    # A chained attempt: how many links it queues, and each link's record (link 1 first).
    # Records written before chains existed have neither and read as a single job.
    chain_repeat: int = 1
    links: tuple[Link, ...] = ()
    # Submitted with --dependency=afterok on these job ids (job.dependency: slurm).
    upstream_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.events, list):
            object.__setattr__(self, "events", tuple(self.events))
        if isinstance(self.upstream_ids, list):
            object.__setattr__(self, "upstream_ids", tuple(self.upstream_ids))
        # Read back from JSON, links are dicts; anything else is a damaged record (TypeError).
        links = tuple(Link(**x) if isinstance(x, dict) else x for x in self.links)
        if not all(isinstance(link, Link) for link in links):
            raise TypeError("links must be link records")
        object.__setattr__(self, "links", links)

    @property
    def chained(self) -> bool:
        return bool(self.links)

    def with_link(self, number: int, **changes: Any) -> Attempt:
        """This attempt with the newest record of link `number` changed (a retried link has
        older records of the same number, which stay as they were)."""
        index = max(i for i, link in enumerate(self.links) if link.link == number)
        updated = dataclasses.replace(self.links[index], **changes)
        links = (*self.links[:index], updated, *self.links[index + 1 :])
        return dataclasses.replace(self, links=links)

    @property
    def succeeded(self) -> bool:
        if self.phase != "finished":
            return False
        if self.finish_requested:
            return True
        # SLURM says COMPLETED only for exit 0; the code itself may be unknown (an array task's
        # markers are written under its own job id, which the reconciler does not see).
        return self.final_state == "COMPLETED" and self.exit_code in (0, None)

    def fired(self, key: str) -> bool:
        return any(event.get("key") == key for event in self.events)


@dataclass(frozen=True)
class LogState:
    """How far the reconciler has read each watched file of one attempt."""

    offsets: dict[str, int] = dataclasses.field(default_factory=dict)
    last_size: int | None = None
    last_growth: str | None = None


@dataclass(frozen=True)
class Dropped:
    job: str
    reason: str
    at: str


@dataclass(frozen=True)
class RetryRequest:
    """`oellm retry`: the user asks for one new attempt after `after` (0: none yet), with
    fresh restart budgets; `revives` is the drop it undoes (its `at`). See `retry.py`."""

    job: str
    at: str
    after: int
    revives: str | None = None


@dataclass(frozen=True)
class History:
    attempts: Mapping[str, tuple[Attempt, ...]]  # job -> attempts, oldest first
    dropped: Mapping[str, Dropped]
    # job -> what is wrong with one of its records (the file and why); such a job is not
    # acted on, and the round ends with exit 2 naming the file.
    damaged: Mapping[str, str] = dataclasses.field(default_factory=dict)
    retries: Mapping[str, RetryRequest] = dataclasses.field(default_factory=dict)

    def latest(self, job: str) -> Attempt | None:
        found = self.attempts.get(job, ())
        return found[-1] if found else None


class RecordExists(Exception):
    """An intent record that another round already wrote: this round must not submit."""


def write_atomic(path: Path, data: Mapping[str, Any], exclusive: bool = False) -> None:
    """Write `data` as JSON to `path` at once (temp file, fsync, rename). `exclusive`: create
    it only if no file is there (a hard link, which fails when the name exists, also on NFS
    and Lustre), else RecordExists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RecordExists(str(path)) from None
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.debug("wrote %s", path)


class Records:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.jobs_dir = state_dir / "jobs"

    def attempt_path(self, job: str, attempt: int) -> Path:
        return self.jobs_dir / job / f"attempt-{attempt:04d}.json"

    def save(self, record: Attempt) -> None:
        write_atomic(self.attempt_path(record.job, record.attempt), dataclasses.asdict(record))

    def create(self, record: Attempt) -> None:
        """A new attempt's first record; RecordExists when another round wrote it already."""
        path = self.attempt_path(record.job, record.attempt)
        write_atomic(path, dataclasses.asdict(record), exclusive=True)

    def drop(self, record: Dropped) -> None:
        write_atomic(self.jobs_dir / record.job / "dropped.json", dataclasses.asdict(record))

    def log_state_path(self, job: str, attempt: int) -> Path:
        return self.jobs_dir / job / f"attempt-{attempt:04d}.log.json"

    def load_log_state(self, job: str, attempt: int) -> LogState:
        path = self.log_state_path(job, attempt)
        if not path.exists():
            return LogState()
        return _read(path, LogState)

    def save_log_state(self, job: str, attempt: int, state: LogState) -> None:
        write_atomic(self.log_state_path(job, attempt), dataclasses.asdict(state))

    def excluded_nodes(self, job: str) -> list[str]:
        path = self.jobs_dir / job / "exclude.json"
        if not path.exists():
            return []
        try:
            nodes = json.loads(path.read_text(encoding="utf-8"))["nodes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReconcileError(f"damaged state record ({exc})", str(path)) from None
        return [str(n) for n in nodes]

    def exclude_node(self, job: str, node: str) -> bool:
        nodes = self.excluded_nodes(job)
        if node in nodes:
            return False
        write_atomic(self.jobs_dir / job / "exclude.json", {"nodes": [*nodes, node]})
        return True

    def move(self, old: str, new: str) -> bool:
        """Carry a renamed job's records over (`moved:` in the config). The new folder is
        built aside and renamed into place, so a crash leaves the old records or both."""
        source, target = self.jobs_dir / old, self.jobs_dir / new
        if not source.is_dir() or target.exists():
            return False
        staging = Path(tempfile.mkdtemp(prefix=f".{new}.moving-", dir=self.jobs_dir))
        for path in sorted(source.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix != ".json":
                # Not a record (a metrics series, metrics_store): carried over as it is.
                shutil.copy2(path, staging / path.name)
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("job") == old:
                data["job"] = new
            write_atomic(staging / path.name, data)
        os.rename(staging, target)
        shutil.rmtree(source)
        return True

    def undrop(self, job: str) -> None:
        (self.jobs_dir / job / "dropped.json").unlink(missing_ok=True)

    def load(self) -> History:
        """Every job's records. A job with a record that cannot be read is listed in
        `damaged` (with none of its records), so the round leaves it alone."""
        attempts: dict[str, tuple[Attempt, ...]] = {}
        dropped: dict[str, Dropped] = {}
        damaged: dict[str, str] = {}
        retries: dict[str, RetryRequest] = {}
        if not self.jobs_dir.is_dir():
            return History(attempts, dropped)
        for job_dir in sorted(self.jobs_dir.iterdir()):
            if not job_dir.is_dir() or job_dir.name.startswith("."):
                continue
            job = job_dir.name
            found: list[Attempt] = []
            try:
                for path in sorted(job_dir.iterdir()):
                    number = _ATTEMPT.fullmatch(path.name)
                    if number:
                        record = _read(path, Attempt)
                        if record.job != job or record.attempt != int(number.group(1)):
                            raise ReconcileError(
                                f"damaged state record: it names job {record.job!r} attempt "
                                f"{record.attempt}, not the job and attempt of its file name",
                                str(path),
                                hint=DAMAGED_HINT,
                            )
                        found.append(record)
                    elif path.name == "dropped.json":
                        dropped[job] = _read(path, Dropped)
                    elif path.name == "retry.json":
                        retries[job] = _read(path, RetryRequest)
            except ReconcileError as error:
                damaged[job] = error.render()
                dropped.pop(job, None)
                retries.pop(job, None)
                continue
            if found:
                attempts[job] = tuple(sorted(found, key=lambda a: a.attempt))
        return History(attempts, dropped, damaged, retries)


DAMAGED_HINT = (
    "its job is left alone until this is mended; if the file is beyond repair, move it "
    "aside: the next round looks that attempt up in SLURM by its tag and adopts what it "
    "finds there rather than submitting again"
)


def _read(path: Path, kind: type[T]) -> T:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = decode(kind, data)
    except OSError as exc:
        raise ReconcileError(
            f"cannot read the state record: {exc.strerror}", str(path), hint=DAMAGED_HINT
        ) from None
    except RecordInvalid as exc:
        raise ReconcileError(f"damaged state record: {exc}", str(path), hint=DAMAGED_HINT) from None
    except ValueError as exc:
        raise ReconcileError(
            f"damaged state record (not JSON: {exc})", str(path), hint=DAMAGED_HINT
        ) from None
    log.debug("read %s", path)
    return record
