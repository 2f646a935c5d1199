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
from pathlib import Path
from typing import Any, TypeVar

from .codec import RecordInvalid, decode
from .errors import ReconcileError
from .model import Attempt, Dropped, History, LogState, RetryRequest

log = logging.getLogger("oellm.records")
T = TypeVar("T")
_ATTEMPT = re.compile(r"attempt-(\d{4,})\.json")


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
