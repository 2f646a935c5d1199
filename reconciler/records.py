"""The reconciler's records on the shared filesystem, one folder per job: its attempts, its
drop and its retry request, each in its own file (`record_file` writes each at once and reads it
strictly). A new attempt's first record (its intent) is created exclusively: a round never
overwrites another round's intent.

    <state_dir>/jobs/<job>/attempt-0001.json   intent, then job id, then outcome
    <state_dir>/jobs/<job>/dropped.json        cancelled before it was ever submitted
    <state_dir>/jobs/<job>/retry.json          `oellm retry`: a new attempt after this one
    <state_dir>/completed/<job>/               a job that completed, its folder moved here
    <state_dir>/drops/<time>-<n>.json          many jobs cancelled before they were submitted
    <state_dir>/cancels/<time>-<n>.json        cancels requested of many attempts in flight

`drops/` and `cancels/` hold what `oellm cancel` of many jobs writes (`cancel_batches`).

A job that completed is settled by the round after the one that recorded its end: its folder
is renamed into `completed/`, a folder rounds list but do not read (a large sweep's finished
jobs then cost a round one listing, not a read of every record). The move is the only copy
there is: nothing is summarised or cached. Whatever is written for such a job later (`oellm
retry`) goes into `jobs/<job>/` again, and a job with both folders is read from both, the
file in `jobs/` first; so a record is never lost, whichever instant a move stops at.

A record that does not check out is reported with its file, and its job gets no action until
the user has looked at it.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from oellm import filesync

from .cancel_batches import (
    AttemptKey,
    batch_cancels,
    batch_drops,
    drop_from_batches,
    write_cancel_batch,
    write_drop_batch,
)
from .codec import encode
from .errors import ReconcileError
from .model import Attempt, Attempts, Dropped, History, LogState, RetryRequest
from .record_file import (
    DAMAGED_HINT,
    RecordExists,
    fsync_folder,
    read,
    read_first,
    write_atomic,
    write_many_atomic,
)

log = logging.getLogger("oellm.records")
T = TypeVar("T")
_ATTEMPT = re.compile(r"attempt-(\d{4,})\.json")
COMPLETED = "completed"  # the folder of settled jobs, beside `jobs`
SETTLE_FENCE = 200  # moves between two checks that this round still holds the state lock
# From this many records on, `write_batch` syncs the file system twice instead of fsyncing each
# record and its folder (a sync also flushes what other programs wrote: not worth it for few).
BATCH_MIN = 32


class Records:
    """A state dir's records: every job's attempts, drop and retry request, each in its own
    file, read again every round (the files are the truth; no copy of them is trusted)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.jobs_dir = state_dir / "jobs"
        self.completed_dir = state_dir / COMPLETED
        self.drops_dir = state_dir / "drops"
        self.cancels_dir = state_dir / "cancels"
        # The jobs with a folder when `load` listed them, and those given one since by
        # `exclude_node` or `move`: only those can have nodes to avoid (None: not loaded).
        self._foldered: set[str] | None = None

    def attempt_path(self, job: str, attempt: int) -> Path:
        return self.jobs_dir / job / f"attempt-{attempt:04d}.json"

    def save(self, record: Attempt) -> None:
        write_atomic(self.attempt_path(record.job, record.attempt), record)

    def create(self, record: Attempt, durable: bool = True) -> None:
        """A new attempt's first record; RecordExists when another round wrote it already
        (also into the job's settled folder). Not `durable`: see `create_many`."""
        path = self.attempt_path(record.job, record.attempt)
        if (self.completed_dir / record.job / path.name).exists():
            raise RecordExists(str(self.completed_dir / record.job / path.name))
        write_atomic(path, record, exclusive=True, durable=durable)

    def create_many(self, records: Sequence[Attempt]) -> list[str | None]:
        """`create` for the intents of one submission (the members of an array): for each
        record None when created, else the path of the record another round wrote. From
        BATCH_MIN records on, none is fsynced on its own: the file system is synced once at
        the end, so all created intents are durable when this returns, with one sync, not
        two fsyncs per record. A crash before that sync leaves intents that may be lost or
        kept: either way nothing was submitted on their word."""
        batch = len(records) >= BATCH_MIN
        found: list[str | None] = []
        for record in records:
            try:
                self.create(record, durable=not batch)
                found.append(None)
            except RecordExists as exists:
                found.append(str(exists))
        if batch:
            filesync.sync_file_system(self.state_dir)
        return found

    def drop(self, record: Dropped) -> None:
        write_atomic(self.jobs_dir / record.job / "dropped.json", encode(record))

    def write_batch(self, saves: Sequence[Attempt], drops: Sequence[Dropped]) -> None:
        """Many records at once (`oellm cancel` of a large bundle): from BATCH_MIN records on,
        each written to a temp file, the file system synced once, every temp file renamed into
        place, synced once more. As with `write_atomic`, a record is either its old or its new
        content after a crash, but there are two syncs in all, not two fsyncs per record."""
        items: list[tuple[Path, Any]] = []  # where, and a record or its JSON object
        for record in saves:
            items.append((self.attempt_path(record.job, record.attempt), record))
        if len(drops) >= BATCH_MIN and len({(d.reason, d.at) for d in drops}) == 1:
            # One record for them all, written first (durable before the cancel goes on).
            write_drop_batch(self.drops_dir, drops)
            drops = ()
        for drop in drops:
            items.append((self.jobs_dir / drop.job / "dropped.json", drop))
        if len(items) < BATCH_MIN:
            # A few records: fsynced one by one, which touches nothing else on the machine.
            for path, data in items:
                write_atomic(path, data)
            return
        write_many_atomic(items, self.state_dir)

    def request_cancels(self, attempts: Sequence[Attempt], reason: str, at: str) -> None:
        """Record the user's cancel on each attempt in flight: from BATCH_MIN attempts on, as
        one record naming them all (`cancels/`; reading an attempt applies it), else on each
        attempt's own record."""
        if len(attempts) < BATCH_MIN:
            saves = [dataclasses.replace(a, cancel_requested=reason) for a in attempts]
            self.write_batch(saves, [])
            return
        write_cancel_batch(self.cancels_dir, attempts, reason, at)

    def request_retry(self, request: RetryRequest) -> None:
        write_atomic(self.jobs_dir / request.job / "retry.json", encode(request))

    def file_of(self, job: str, name: str) -> Path:
        """Where the job's file `name` is: in its folder in `jobs`, else in its settled folder
        if it is there, else (a file still to write) in `jobs`."""
        path = self.jobs_dir / job / name
        if path.exists():
            return path
        settled = self.completed_dir / job / name
        return settled if settled.exists() else path

    def log_state_path(self, job: str, attempt: int) -> Path:
        return self.jobs_dir / job / f"attempt-{attempt:04d}.log.json"

    def load_log_state(self, job: str, attempt: int) -> LogState:
        path = self.log_state_path(job, attempt)
        if not path.exists():
            return LogState()
        return read(path, LogState)

    def save_log_state(self, job: str, attempt: int, state: LogState) -> None:
        write_atomic(self.log_state_path(job, attempt), encode(state))

    def excluded_nodes(self, job: str) -> list[str]:
        """The nodes `job` is kept off (`exclude_node`), from its folder in `jobs`, else in
        its settled folder. Read at once rather than looked up first: asked for each job
        submitted, and most jobs have none. A job that had no folder when the records were
        loaded, and was given no exclusion since, is not looked for at all."""
        if self._foldered is not None and job not in self._foldered:
            return []
        for folder in (self.jobs_dir, self.completed_dir):
            path = folder / job / "exclude.json"
            try:
                nodes = json.loads(path.read_bytes())["nodes"]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ReconcileError(f"damaged state record ({exc})", str(path)) from None
            return [str(n) for n in nodes]
        return []

    def exclude_node(self, job: str, node: str) -> bool:
        nodes = self.excluded_nodes(job)
        if node in nodes:
            return False
        write_atomic(self.jobs_dir / job / "exclude.json", {"nodes": [*nodes, node]})
        if self._foldered is not None:
            self._foldered.add(job)
        return True

    def move(self, old: str, new: str) -> bool:
        """Carry a renamed job's records over (`moved:` in the config). The new folder is
        built aside and renamed into place, so a crash leaves the old records or both. A
        settled job's folder in `completed` is carried over too (into `jobs`)."""
        sources = [p for p in (self.jobs_dir / old, self.completed_dir / old) if p.is_dir()]
        taken = (self.jobs_dir / new).exists() or (self.completed_dir / new).exists()
        batched = [d for d in batch_drops(self.drops_dir) if d.job == old]
        if taken or not (sources or batched):
            return False
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{new}.moving-", dir=self.jobs_dir))
        files = self._files(old) if sources else {}
        cancels = batch_cancels(self.cancels_dir)
        for name, paths in sorted(files.items()):
            if name.startswith("."):
                continue
            path = Path(paths[0])
            if path.suffix != ".json":
                # Not a record (a metrics series, metrics_store): carried over as it is.
                shutil.copy2(path, staging / name)
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("job") == old:
                data["job"] = new
                key = (old, data.get("attempt"), data.get("intent_at"))
                request = cancels.get(key)  # type: ignore[arg-type]
                if request is not None and data.get("cancel_requested") is None:
                    data["cancel_requested"] = request  # a batch's cancel goes along
            write_atomic(staging / name, data)
        if batched and "dropped.json" not in files:
            # Cancelled in a batch (`drops/`) under its old name: the drop goes along.
            moved_drop = dataclasses.replace(batched[-1], job=new)
            write_atomic(staging / "dropped.json", encode(moved_drop))
        os.rename(staging, self.jobs_dir / new)
        if self._foldered is not None:
            self._foldered.add(new)
        for source in sources:
            shutil.rmtree(source)
        if batched:
            # The old name is free again: a new job given it later is not dropped.
            drop_from_batches(self.drops_dir, old)
        return True

    def undrop(self, job: str) -> None:
        (self.jobs_dir / job / "dropped.json").unlink(missing_ok=True)

    def load(self, read_completed: bool = True) -> History:
        """Every job's records, read from their files. A job with a record that cannot be read
        is listed in `damaged` (with none of its records), so the round leaves it alone.

        `read_completed=False` (a round): the jobs found only in the completed folder are
        listed in `History.unread`, and their records are read only if something asks."""
        attempts: dict[str, tuple[Attempt, ...]] = {}
        dropped: dict[str, Dropped] = {}
        damaged: dict[str, str] = {}
        retries: dict[str, RetryRequest] = {}
        # `jobs` is listed first: a folder a round moves in between is then listed twice and
        # read where it is, never missed.
        live = _folders(self.jobs_dir)
        completed = set(_folders(self.completed_dir))
        settled = completed.difference(live)
        self._foldered = completed.union(live)
        unread = frozenset() if read_completed else frozenset(settled)
        cancels = batch_cancels(self.cancels_dir)
        for job in sorted(set(live).union(settled) - unread):
            # A round holds the state lock, so no folder moves while it reads: it looks into
            # a job's settled folder only when the listing showed one. Other readers look.
            both = read_completed or job in completed
            try:
                found, drop, retry = self._read_job(job, cancels, both)
            except ReconcileError as error:
                damaged[job] = error.render()
                continue
            if retry is not None:
                retries[job] = retry
            if found:
                attempts[job] = found
            if drop is not None:
                dropped[job] = drop
        for drop in batch_drops(self.drops_dir):
            # A batch and a job's own drop: the later one counts.
            if drop.job not in dropped or dropped[drop.job].at < drop.at:
                dropped[drop.job] = drop
        if not unread:
            return History(attempts, dropped, damaged, retries)
        lazy = Attempts(attempts, unread, lambda job: self._read_job(job, cancels)[0])
        return History(lazy, dropped, damaged, retries, unread=unread)

    def settle(self, jobs: Sequence[str], fence: Callable[[], None] | None = None) -> list[str]:
        """Move the folders of jobs that completed into the completed folder (the round holds
        the state lock and has read their records). A job whose folder is there already (it
        was retried since) has its newer files moved over one by one. `fence` (the lock's
        `verify`, which also renews its lease) is called before the first move and then every
        SETTLE_FENCE moves. Returns the jobs moved."""
        moved: list[str] = []
        self.completed_dir.mkdir(exist_ok=True)
        for number, job in enumerate(jobs):
            if fence is not None and number % SETTLE_FENCE == 0:
                fence()
            source = os.path.join(self.jobs_dir, job)
            target = os.path.join(self.completed_dir, job)
            try:
                os.rename(source, target)  # onto no folder, or an empty one
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Settled before, retried since: the later files are moved over one by one.
                # Each rename is atomic, and a reader meanwhile finds every file in one
                # folder or the other.
                for name in os.listdir(source):
                    os.replace(os.path.join(source, name), os.path.join(target, name))
                os.rmdir(source)
            moved.append(job)
        if moved:
            fsync_folder(self.jobs_dir)
            fsync_folder(self.completed_dir)
            log.debug("settled %d jobs", len(moved))
        return moved

    def _files(self, job: str, both: bool = True) -> dict[str, list[str]]:
        """The job's record files by name, each with the paths to try in order: its folder in
        `jobs` first, then (`both`) the completed one (a file moved between the two listings
        is found in the second)."""
        # Plain strings joined with "/": a job's name is one path component (a folder name).
        live = f"{os.fspath(self.jobs_dir)}/{job}"
        settled = f"{os.fspath(self.completed_dir)}/{job}"
        files, found = _listed((live, settled) if both else (live,))
        if not found and not both:
            files, found = _listed((settled,))  # listed, then moved by a settling round
        if not found:
            # Listed a moment ago and gone from both places: it is not "never submitted".
            raise ReconcileError(
                "the job's records folder vanished while this round read it",
                live,
                hint="another process moved or deleted it; the next round reads it again",
            )
        return files

    def _read_job(
        self, job: str, cancels: Mapping[AttemptKey, str], both: bool = True
    ) -> tuple[tuple[Attempt, ...], Dropped | None, RetryRequest | None]:
        # Plain strings, not Path objects: this runs for every job in flight, every round.
        found: list[Attempt] = []
        drop: Dropped | None = None
        retry: RetryRequest | None = None
        for name, paths in sorted(self._files(job, both).items()):
            number = _ATTEMPT.fullmatch(name)
            if number:
                record, path = read_first(paths, Attempt)
                if record.job != job or record.attempt != int(number.group(1)):
                    raise ReconcileError(
                        f"damaged state record: it names job {record.job!r} attempt "
                        f"{record.attempt}, not the job and attempt of its file name",
                        path,
                        hint=DAMAGED_HINT,
                    )
                request = cancels.get((job, record.attempt, record.intent_at))
                if request is not None and record.cancel_requested is None:
                    # A cancel requested in a batch (`request_cancels`) is the attempt's own.
                    record = dataclasses.replace(record, cancel_requested=request)
                found.append(record)
            elif name == "dropped.json":
                drop = read_first(paths, Dropped)[0]
            elif name == "retry.json":
                retry = read_first(paths, RetryRequest)[0]
        return tuple(sorted(found, key=lambda a: a.attempt)), drop, retry


def _listed(folders: Sequence[str]) -> tuple[dict[str, list[str]], int]:
    """The files of `folders` by name, each with its paths in the folders' order, and how
    many of the folders exist."""
    files: dict[str, list[str]] = {}
    found = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        found += 1
        for name in names:
            files.setdefault(name, []).append(f"{folder}/{name}")
    return files, found


def _folders(parent: Path) -> list[str]:
    # One listing; d_type tells folders apart without a stat each.
    try:
        with os.scandir(parent) as found:
            return [e.name for e in found if not e.name.startswith(".") and e.is_dir()]
    except FileNotFoundError:
        return []
