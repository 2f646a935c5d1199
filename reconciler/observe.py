"""Observe: ask the scheduler once, read the markers the scripts wrote, check the files and
commands that conditions name. The result is plain data; nothing here decides or acts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from . import tags
from .arrays import log_for, split_task_id
from .bundle import Bundle
from .conditions import commands_needed, files_needed
from .errors import SchedulerUnavailable
from .logs import read_new
from .model import Attempt, History, LockJob, LogLine, LogRead, LogState, Markers, Observation
from .records import Records
from .recover import index_tags
from .schedulers import FINISHED, Scheduler, SchedulerJob

# sacct looks back from the oldest attempt still in flight, with a margin for clock skew
# between login nodes (sacct without -S would only look since midnight).
LOOKBACK_MARGIN = timedelta(minutes=10)


CommandRunner = Callable[[tuple[str, ...], Path], bool]


def observe(
    bundle: Bundle,
    history: History,
    scheduler: Scheduler,
    tag_prefix: str,
    now: datetime,
    run_command: CommandRunner,
    records: Records | None = None,
    lookback: datetime | None = None,
) -> Observation:
    """`lookback`: also ask accounting back to this moment (the round is about to submit
    attempts it has no record of, and must first see whether SLURM knows them)."""
    # Every attempt in flight, also of jobs no longer in the bundle (they are reported).
    in_flight = history.in_flight()
    asked = bool(in_flight) or lookback is not None
    rows, error = _ask(scheduler, tag_prefix, in_flight, lookback) if asked else ([], None)
    available = error is None
    by_tag = tags_of(rows)
    by_id = {row.job_id: row for row in rows}
    read = _Read(bundle, records, now, by_id)
    names = {job.name for job in bundle.jobs}
    for attempt in in_flight:
        running = jobs_of(attempt, by_tag)
        if running and attempt.job in names:
            read.attempt(attempt, running)
    files, commands = _facts(bundle, history, run_command)
    return Observation(
        asked,
        available,
        error,
        by_id,
        by_tag,
        read.markers,
        files,
        commands,
        read.logs,
        read.growth,
        read.progress,
        index_tags(rows, tag_prefix),
        lookback is not None and available,
    )


def _ask(
    scheduler: Scheduler,
    tag_prefix: str,
    in_flight: Sequence[Attempt],
    lookback: datetime | None,
) -> tuple[list[SchedulerJob], str | None]:
    """The one question to the scheduler: our jobs since the oldest attempt in flight (or
    the lookback), and by id the ones recorded. (rows, None), or ([], why) unanswered."""
    known = [a.job_id for a in in_flight if a.job_id]
    known += [link.job_id for a in in_flight for link in a.links if link.job_id]
    try:
        return scheduler.query(
            tag_prefix, accounting_since(in_flight, lookback), known_ids=known
        ), None
    except SchedulerUnavailable as exc:
        return [], str(exc)


def accounting_since(in_flight: Sequence[Attempt], lookback: datetime | None) -> datetime | None:
    """How far back accounting is asked: from the oldest attempt in flight, or the lookback
    if it is older; None when there is neither (the scheduler is not asked)."""
    since = [_parse(a.intent_at) - LOOKBACK_MARGIN for a in in_flight]
    if lookback is not None:
        since.append(lookback)
    return min(since, default=None)


@dataclass
class _Read:
    """What the files of the attempts in flight say: markers, new log lines, progress."""

    bundle: Bundle
    records: Records | None
    now: datetime
    by_id: Mapping[str, SchedulerJob]
    markers: dict[str, Markers] = field(default_factory=dict)
    logs: dict[str, LogRead] = field(default_factory=dict)
    growth: dict[str, datetime] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)

    def attempt(self, attempt: Attempt, running: Sequence[tuple[int, str]]) -> None:
        bundle = self.bundle
        job = bundle.job(attempt.job)
        for _, job_id in running:
            row = self.by_id.get(job_id)
            if row is not None and row.state not in FINISHED:
                # Markers count only for a job SLURM no longer runs (`Observation.seen`):
                # not read for the ones queued or running, most of them in a big sweep.
                continue
            self.markers[job_id] = read_markers(bundle.resolve(job.output_dir), job_id)
        if job.watched_log_events and self.records is not None:
            state = self.records.load_log_state(job.name, attempt.attempt)
            self.logs[job.name], size = _read_logs(bundle, job, running, state)
            if (size is not None and size != state.last_size) or state.last_growth is None:
                self.growth[job.name] = self.now
            else:
                self.growth[job.name] = datetime.fromisoformat(state.last_growth)
        progress_file = job.restart.progress_file
        if progress_file:
            found = read_iteration(bundle.resolve(progress_file))
            if found is not None:
                self.progress[job.name] = found


def _facts(
    bundle: Bundle, history: History, run_command: CommandRunner
) -> tuple[dict[str, bool], dict[tuple[str, ...], bool]]:
    """The files and commands that the conditions of jobs still to run name, each once."""
    files: dict[str, bool] = {}
    commands: dict[tuple[str, ...], bool] = {}
    for job in bundle.jobs:
        if not (job.start_conditions or job.cancel_conditions or job.finish_condition is not None):
            continue  # it names no file or command (most jobs of a large sweep)
        if history.settled(job.name):
            continue
        latest = history.latest(job.name)
        if job.name in history.dropped or (latest is not None and latest.succeeded):
            continue
        conditions = [*job.start_conditions, *job.cancel_conditions]
        if job.finish_condition is not None and latest is None:
            conditions.append(job.finish_condition)
        for path in files_needed(conditions):
            if path not in files:
                files[path] = bundle.resolve(path).exists()
        for argv in commands_needed(conditions):
            if argv not in commands:
                commands[argv] = run_command(argv, bundle.root)
    return files, commands


def tags_of(rows: Sequence[SchedulerJob]) -> Mapping[str, SchedulerJob]:
    """Rows by tag (the scheduler reads it from the job name). The tasks of an array share its
    tag, so each task is also found as `<tag>[<index>]`, the tag its member's record holds."""
    return _ByTag(rows)


class _ByTag(Mapping[str, SchedulerJob]):
    """`tags_of`, indexed on the first lookup: a round looks a row up by its tag only for an
    attempt (or link) whose job id is not recorded, which most rounds have none of; the
    10,000 tasks of an array sweep are then not indexed at all."""

    def __init__(self, rows: Sequence[SchedulerJob]) -> None:
        self._rows = rows

    @functools.cached_property
    def _index(self) -> dict[str, SchedulerJob]:
        by_tag: dict[str, SchedulerJob] = {}
        for row in self._rows:
            by_tag[row.name] = row
            _, index = split_task_id(row.job_id)
            if index is not None:
                by_tag[tags.member_tag(row.name, index)] = row
        return by_tag

    def __getitem__(self, tag: str) -> SchedulerJob:
        return self._index[tag]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def jobs_of(attempt: Attempt, by_tag: Mapping[str, SchedulerJob]) -> list[tuple[int, str]]:
    """(link, job id) of each job of an attempt in flight whose markers and logs matter: the
    attempt's one job (link 0), or each link of a chain not recorded as ended (a link's log
    is read in the round its end is recorded, so nothing after that is missed). A recorded
    job id is taken as it is; only a job without one is looked up by its tag."""
    if not attempt.links:
        job_id = attempt.job_id or _id_of(by_tag.get(attempt.tag))
        return [(0, job_id)] if job_id else []
    found = []
    for link in attempt.links:
        job_id = link.job_id or _id_of(by_tag.get(link.tag))
        if link.phase != "finished" and job_id:
            found.append((link.link, job_id))
    return found


def _id_of(row: SchedulerJob | None) -> str | None:
    return row.job_id if row is not None else None


def _read_logs(
    bundle: Bundle, job: LockJob, running: Sequence[tuple[int, str]], state: LogState
) -> tuple[LogRead, int | None]:
    # Each file once, with the newest link that writes it (links may share a log path).
    paths: dict[str, int] = {}
    mains: list[str] = []
    for link, job_id in running:
        main = str(bundle.resolve(log_for(job.log_path, job_id, job.array_index)))
        mains.append(main)
        paths[main] = link
        for event in job.watched_log_events:
            for extra in event.get("paths", ()):
                paths[str(bundle.resolve(log_for(extra, job_id, job.array_index)))] = link
    lines: list[LogLine] = []
    offsets: dict[str, int] = {}
    for path, link in paths.items():
        found, offsets[path] = read_new(Path(path), state.offsets.get(path, 0), link=link)
        lines.extend(found)
    # Growth of any link's log counts against inactivity.
    sizes = [_size(main) for main in dict.fromkeys(mains)]
    known = [size for size in sizes if size is not None]
    size = sum(known) if known else None
    return LogRead(tuple(lines), offsets, size), size


def _size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def read_iteration(path: Path) -> int | None:
    """The checkpoint iteration a progress file holds (Megatron writes an integer, or
    `release`), or None when there is none yet."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_markers(output_dir: Path, job_id: str) -> Markers:
    folder = output_dir / ".oellm"
    started = (folder / f"{job_id}.started").exists()
    exit_code: int | None = None
    try:
        exit_code = int((folder / f"{job_id}.exit").read_text().strip())
    except (OSError, ValueError):
        exit_code = None
    return Markers(started, exit_code)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)
