"""The settled index: one file holding the records of every job with nothing left in flight
(its last attempt finished, or it was dropped before it was ever submitted), so that a round
reads a settled job's records once, in the round that settles it, instead of every round.

    <state_dir>/settled.json    a header line {"version", "sha256"}, then the jobs, one line
    <state_dir>/settled.dirty   jobs whose records were written since, one name a line

The records stay the truth; this file is a copy that is trusted only while nothing says
otherwise. A record of an indexed job is written only after its name is in settled.dirty
(appended and fsynced first), so a crash leaves at worst a job read from its records again,
never a stale copy trusted. A missing or damaged index (wrong version or checksum, a record
that does not decode) is rebuilt from the records. An index made stale by a writer that skips
settled.dirty (an older oellm, a hand edit) still cannot make a round submit an attempt twice:
a new attempt's intent is created exclusively, so the create fails, the job is named in
settled.dirty, and the next round reads it from its records (`Records.create`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codec import RecordInvalid
from .model import Attempt, Dropped

log = logging.getLogger("oellm.settled")
VERSION = 1
INDEX_NAME = "settled.json"
DIRTY_NAME = "settled.dirty"


@dataclass(frozen=True)
class Entry:
    """A settled job's records: every attempt (oldest first) and its drop, if any."""

    attempts: tuple[Attempt, ...]
    dropped: Dropped | None


def settled(attempts: tuple[Attempt, ...], dropped: Dropped | None, retry: bool) -> bool:
    """Whether a job's records describe nothing in flight and nothing asked for: the index
    may hold it. A pending `oellm retry` request keeps a job out."""
    if retry:
        return False
    if attempts:
        return all(a.phase == "finished" for a in attempts)
    return dropped is not None


def read(state_dir: Path) -> tuple[dict[str, Entry] | None, set[str]]:
    """(entries, dirty jobs). Entries are None when the index is missing or damaged: then
    every job is read from its records (and the lock holder writes the index again)."""
    return _entries(state_dir / INDEX_NAME), read_dirty(state_dir)


def read_dirty(state_dir: Path) -> set[str]:
    try:
        text = (state_dir / DIRTY_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    return {line for line in text.splitlines() if line}


def _entries(path: Path) -> dict[str, Entry] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: cannot read the settled index (%s); reading every record", path, exc)
        return None
    head, _, body = data.partition(b"\n")
    try:
        header = json.loads(head)
        if header.get("version") != VERSION:
            raise ValueError(f"version {header.get('version')!r}, not {VERSION}")
        if header.get("sha256") != hashlib.sha256(body).hexdigest():
            raise ValueError("its checksum does not match")
        jobs = json.loads(body)
        if not isinstance(jobs, dict):
            raise ValueError("not an object of jobs")
        return {str(name): _entry(name, item) for name, item in jobs.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        # RecordInvalid is a ValueError: one bad entry discards the whole copy.
        log.warning("%s: damaged settled index (%s); rebuilding it from the records", path, exc)
        return None


def _entry(name: str, item: Any) -> Entry:
    # The checksum vouches for the content, which was written from records read strictly
    # (codec): it is taken as it is, ten times faster than checking every field again.
    if not isinstance(item, dict) or not isinstance(item.get("attempts"), list):
        raise RecordInvalid(f"entry {name!r} is not a job's records")
    attempts = tuple(Attempt(**a) for a in item["attempts"])
    raw = item.get("dropped")
    dropped = Dropped(**raw) if raw is not None else None
    if any(a.job != name for a in attempts) or (dropped is not None and dropped.job != name):
        raise RecordInvalid(f"entry {name!r} holds another job's records")
    if not settled(attempts, dropped, retry=False):
        raise RecordInvalid(f"entry {name!r} is not settled")
    return Entry(attempts, dropped)


def encode(entries: Mapping[str, Entry]) -> bytes:
    """The index file's bytes: the header (version, checksum of the rest), then the jobs."""
    body = json.dumps(
        {name: _plain(entries[name]) for name in sorted(entries)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    header = json.dumps({"version": VERSION, "sha256": hashlib.sha256(body).hexdigest()})
    return header.encode() + b"\n" + body


def forget_dirty(state_dir: Path) -> None:
    """After the index was written again: every job settled.dirty named was read again."""
    (state_dir / DIRTY_NAME).unlink(missing_ok=True)


def _plain(entry: Entry) -> dict[str, Any]:
    return {
        "attempts": [_compact(a) for a in entry.attempts],
        "dropped": dataclasses.asdict(entry.dropped) if entry.dropped is not None else None,
    }


def _compact(attempt: Attempt) -> dict[str, Any]:
    """An attempt without the fields that hold their default (most of them, once finished):
    the index is read whole every round, so its size is its cost."""
    data = dataclasses.asdict(attempt)
    for name, default in _defaults().items():
        if data[name] == default:
            del data[name]
    return data


@functools.cache
def _defaults() -> dict[str, Any]:
    found = {}
    for field in dataclasses.fields(Attempt):
        if field.default is not dataclasses.MISSING:
            found[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            found[field.name] = field.default_factory()
    return found


def mark_dirty(state_dir: Path, job: str) -> None:
    """Name `job` in settled.dirty, durably, before one of its records is written."""
    path = state_dir / DIRTY_NAME
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        # The file's name must survive a crash too, not only its content.
        dir_fd = os.open(state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
