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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .codec import RecordInvalid, decode
from .errors import ReconcileError
from .model import Attempt, Dropped, History, LogState, RetryRequest

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
    """A state dir's records: every job's attempts, drop and retry request, each in its own
    file, read again every round (the files are the truth; no copy of them is trusted)."""

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

    def write_batch(self, saves: Sequence[Attempt], drops: Sequence[Dropped]) -> None:
        """Many records at once (`oellm cancel` of a large bundle): from BATCH_MIN records on,
        each written to a temp file, the file system synced once, every temp file renamed into
        place, synced once more. As with `write_atomic`, a record is either its old or its new
        content after a crash, but there are two syncs in all, not two fsyncs per record."""
        items: list[tuple[Path, Mapping[str, Any]]] = []
        for record in saves:
            path = self.attempt_path(record.job, record.attempt)
            items.append((path, dataclasses.asdict(record)))
        for drop in drops:
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
        """Every job's records, read from their files. A job with a record that cannot be read
        is listed in `damaged` (with none of its records), so the round leaves it alone."""
        attempts: dict[str, tuple[Attempt, ...]] = {}
        dropped: dict[str, Dropped] = {}
        damaged: dict[str, str] = {}
        retries: dict[str, RetryRequest] = {}
        for job in sorted(self._job_folders()):
            try:
                found, drop, retry = self._read_job(job)
            except ReconcileError as error:
                damaged[job] = error.render()
                continue
            if retry is not None:
                retries[job] = retry
            if found:
                attempts[job] = found
            if drop is not None:
                dropped[job] = drop
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
