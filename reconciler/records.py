"""The reconciler's records on the shared filesystem: one file per job attempt, written
atomically (temp file, fsync, rename), so a run killed at any instant leaves either the old
record or the new one, never half of one. A new attempt's first record (its intent) is created
exclusively: a round never overwrites another round's intent.

    <state_dir>/jobs/<job>/attempt-0001.json   intent, then job id, then outcome
    <state_dir>/jobs/<job>/dropped.json        cancelled before it was ever submitted
    <state_dir>/jobs/<job>/retry.json          `oellm retry`: a new attempt after this one
    <state_dir>/settled.json                   a copy of the settled jobs' records (settled.py)

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import settled
from .codec import RecordInvalid, decode
from .errors import ReconcileError
from .model import Attempt, Dropped, History, LogState, RetryRequest
from .settled import Entry

log = logging.getLogger("oellm.records")
T = TypeVar("T")
_ATTEMPT = re.compile(r"attempt-(\d{4,})\.json")
# From this many records on, `write_batch` syncs the file system twice instead of fsyncing each
# record and its folder (a sync also flushes what other programs wrote: not worth it for few).
BATCH_MIN = 32
# One job's records: its attempts (oldest first), its drop and its pending retry request.
_JobRecords = tuple[tuple[Attempt, ...], Dropped | None, RetryRequest | None]


class RecordExists(Exception):
    """An intent record that another round already wrote: this round must not submit."""


def write_atomic(path: Path, data: Mapping[str, Any], exclusive: bool = False) -> None:
    """Write `data` as JSON to `path` at once (temp file, fsync, rename). `exclusive`: create
    it only if no file is there (a hard link, which fails when the name exists, also on NFS
    and Lustre), else RecordExists."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), exclusive)


def write_bytes_atomic(path: Path, data: bytes, exclusive: bool = False) -> None:
    """`write_atomic` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
    fsync_folder(path.parent)
    log.debug("wrote %s", path)


def fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Records:
    """A state dir's records. Every write of a record that `load` reads goes through here,
    so that a job the settled index holds is named in settled.dirty before it changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.jobs_dir = state_dir / "jobs"
        self._index: dict[str, Entry] = {}  # the settled index as `load` found it
        self._indexed: set[str] | None = None  # its jobs; None: not read yet
        self._dirty: set[str] = set()  # named in settled.dirty
        self._fresh: dict[str, Entry] = {}  # settled jobs `load` read from their records
        self._written: set[str] = set()  # jobs whose records this process wrote since `load`
        self._settling: set[str] = set()  # ... of which the last write may have settled them
        self._listed: set[str] | None = None  # the job folders `load` found; None: no load

    def attempt_path(self, job: str, attempt: int) -> Path:
        return self.jobs_dir / job / f"attempt-{attempt:04d}.json"

    def save(self, record: Attempt) -> None:
        self._touch(record.job, settles=record.phase == "finished")
        write_atomic(self.attempt_path(record.job, record.attempt), dataclasses.asdict(record))

    def create(self, record: Attempt) -> None:
        """A new attempt's first record; RecordExists when another round wrote it already
        (or a settled index that did not know of it let this round try: `_touch` has named
        the job in settled.dirty, so the next round reads its records)."""
        self._touch(record.job, settles=False)
        path = self.attempt_path(record.job, record.attempt)
        write_atomic(path, dataclasses.asdict(record), exclusive=True)

    def drop(self, record: Dropped) -> None:
        self._touch(record.job, settles=True)
        write_atomic(self.jobs_dir / record.job / "dropped.json", dataclasses.asdict(record))

    def write_batch(self, saves: Sequence[Attempt], drops: Sequence[Dropped]) -> None:
        """Many records at once (`oellm cancel` of a large bundle): from BATCH_MIN records on,
        each written to a temp file, the file system synced once, every temp file renamed into
        place, synced once more. As with `write_atomic`, a record is either its old or its new
        content after a crash, but there are two syncs in all, not two fsyncs per record."""
        items: list[tuple[Path, Mapping[str, Any]]] = []
        for record in saves:
            self._touch(record.job, settles=record.phase == "finished")
            path = self.attempt_path(record.job, record.attempt)
            items.append((path, dataclasses.asdict(record)))
        for drop in drops:
            self._touch(drop.job, settles=True)
            items.append((self.jobs_dir / drop.job / "dropped.json", dataclasses.asdict(drop)))
        if len(items) < BATCH_MIN:
            # A few records: fsynced one by one, which touches nothing else on the machine.
            for path, data in items:
                write_atomic(path, data)
            return
        staged: list[tuple[str, Path]] = []
        try:
            for path, data in items:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
                staged.append((tmp, path))
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, indent=1, sort_keys=True)
                    handle.write("\n")
            os.sync()  # every new content is on disk before any name points to it
            while staged:
                tmp, path = staged[-1]
                os.replace(tmp, path)
                staged.pop()
            os.sync()
        finally:
            for tmp, _ in staged:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        log.debug("wrote %d records", len(items))

    def request_retry(self, request: RetryRequest) -> None:
        self._touch(request.job, settles=False)
        write_atomic(self.jobs_dir / request.job / "retry.json", dataclasses.asdict(request))

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
        self._touch(old, settles=False)
        self._touch(new, settles=False)
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
        self._touch(job, settles=False)
        (self.jobs_dir / job / "dropped.json").unlink(missing_ok=True)

    def _touch(self, job: str, settles: bool) -> None:
        """Before a write to `job`'s records: name it in settled.dirty if the index holds it
        (once per load), and remember whether this write may settle it."""
        if self._indexed is None:
            entries, self._dirty = settled.read(self.state_dir)
            self._indexed = set(entries or ())
        if job in self._indexed and job not in self._dirty:
            settled.mark_dirty(self.state_dir, job)
            self._dirty.add(job)
        self._written.add(job)
        if settles:
            self._settling.add(job)
        else:
            self._settling.discard(job)

    def load(self) -> History:
        """Every job's records: a settled job's from the settled index, the others' from
        their files. A job with a record that cannot be read is listed in `damaged` (with
        none of its records), so the round leaves it alone."""
        entries, self._dirty = settled.read(self.state_dir)
        self._index = entries or {}
        self._indexed = set(self._index)
        self._fresh, self._written, self._settling = {}, set(), set()
        attempts: dict[str, tuple[Attempt, ...]] = {}
        dropped: dict[str, Dropped] = {}
        damaged: dict[str, str] = {}
        retries: dict[str, RetryRequest] = {}
        self._listed = set(self._job_folders())
        for job in sorted(self._listed):
            entry = self._index.get(job) if job not in self._dirty else None
            if entry is None:
                try:
                    found, drop, retry = self._read_job(job)
                except ReconcileError as error:
                    damaged[job] = error.render()
                    continue
                entry = Entry(found, drop)
                if retry is not None:
                    retries[job] = retry
                elif settled.settled(found, drop, retry=False):
                    self._fresh[job] = entry
            if entry.attempts:
                attempts[job] = entry.attempts
            if entry.dropped is not None:
                dropped[job] = entry.dropped
        return History(attempts, dropped, damaged, retries)

    def _job_folders(self) -> list[str]:
        # One listing of the jobs folder; d_type tells folders apart without a stat each.
        try:
            with os.scandir(self.jobs_dir) as found:
                return [e.name for e in found if not e.name.startswith(".") and e.is_dir()]
        except FileNotFoundError:
            return []

    def _read_job(
        self, job: str
    ) -> tuple[tuple[Attempt, ...], Dropped | None, RetryRequest | None]:
        # Plain strings, not Path objects: this runs for every job in flight, every round.
        job_dir = os.path.join(self.jobs_dir, job)
        found: list[Attempt] = []
        drop: Dropped | None = None
        retry: RetryRequest | None = None
        for name in sorted(os.listdir(job_dir)):
            path = os.path.join(job_dir, name)
            number = _ATTEMPT.fullmatch(name)
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
            elif name == "dropped.json":
                drop = _read(path, Dropped)
            elif name == "retry.json":
                retry = _read(path, RetryRequest)
        return tuple(sorted(found, key=lambda a: a.attempt)), drop, retry

    def seal(self) -> None:
        """Write the settled index again when this round changed what it holds: the jobs
        settled before (unless written since), those settled now. Lock holder only, after
        the round's writes."""
        if self._listed is None:
            return
        listed = self._listed
        # A job named in settled.dirty was read from its files (`_fresh` if settled).
        kept = {job: e for job, e in self._index.items() if job not in self._dirty}
        entries = {
            job: entry
            for job, entry in {**kept, **self._fresh}.items()
            if job in listed and job not in self._written
        }
        for job in self._settling:
            try:
                found, drop, retry = self._read_job(job)
            except (ReconcileError, OSError):
                continue
            if settled.settled(found, drop, retry is not None):
                entries[job] = Entry(found, drop)
        if entries == self._index and not self._dirty:
            return
        write_bytes_atomic(self.state_dir / settled.INDEX_NAME, settled.encode(entries))
        settled.forget_dirty(self.state_dir)
        self._index, self._indexed, self._dirty = entries, set(entries), set()
        self._fresh, self._written, self._settling = {}, set(), set()
        self._listed = listed | set(entries)


DAMAGED_HINT = (
    "its job is left alone until this is mended; if the file is beyond repair, move it "
    "aside: the next round looks that attempt up in SLURM by its tag and adopts what it "
    "finds there rather than submitting again"
)


def _read(path: str | Path, kind: type[T]) -> T:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
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
