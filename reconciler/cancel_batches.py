"""The records `oellm cancel` of many jobs writes: one file for all of them, not a file per job.
A drop of the jobs never submitted (`drops/`; a job's own `dropped.json` and a batch that names
it are the same kind of record, and the later one counts), a cancel request of the attempts in
flight (`cancels/`; reading an attempt applies it). Each batch file is named by its time and
never reused; one that cannot be read stops the round.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .codec import decode
from .errors import ReconcileError
from .model import Attempt, Dropped
from .record_file import write_atomic

T = TypeVar("T")
AttemptKey = tuple[str, int, str]  # job, attempt, intent time: one attempt, ever


def write_drop_batch(folder: Path, drops: Sequence[Dropped]) -> None:
    """One record in `folder` for `drops`, which share one reason and one time."""
    batch = {"at": drops[0].at, "reason": drops[0].reason, "jobs": [d.job for d in drops]}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / _batch_name(drops[0].at), batch, exclusive=True)


def write_cancel_batch(folder: Path, attempts: Sequence[Attempt], reason: str, at: str) -> None:
    """One record in `folder` of the user's cancel of `attempts`, all of them in flight."""
    # The intent's time tells this attempt from a later one under the same name and number
    # (a job renamed away, and a new job given its old name).
    named = [{"job": a.job, "attempt": a.attempt, "intent_at": a.intent_at} for a in attempts]
    folder.mkdir(parents=True, exist_ok=True)
    batch = {"at": at, "reason": reason, "attempts": named}
    write_atomic(folder / _batch_name(at), batch, exclusive=True)


def batch_cancels(folder: Path) -> dict[AttemptKey, str]:
    """(job, attempt, intent time) -> the cancel `Records.request_cancels` recorded for it."""

    def parse(data: dict[str, Any]) -> list[tuple[AttemptKey, str]]:
        reason, named = data["reason"], data["attempts"]
        if not isinstance(reason, str) or not isinstance(named, list):
            raise TypeError("'reason' is not text or 'attempts' is not a list")
        found = [((i["job"], i["attempt"], i["intent_at"]), reason) for i in named]
        if not all(
            isinstance(j, str) and type(n) is int and isinstance(at, str) for (j, n, at), _ in found
        ):
            raise TypeError("an attempt is not a job name, a number and an intent time")
        return found

    found: dict[AttemptKey, str] = {}
    for key, reason in _batches(folder, "cancel", parse):
        found.setdefault(key, reason)
    return found


def batch_drops(folder: Path) -> list[Dropped]:
    """The drops that `Records.write_batch` wrote for many jobs at once, oldest batch first."""

    def parse(data: dict[str, Any]) -> list[Dropped]:
        at, reason, jobs = data["at"], data["reason"], data["jobs"]
        if not (isinstance(jobs, list) and all(isinstance(j, str) for j in jobs)):
            raise TypeError("'jobs' is not a list of job names")
        return [decode(Dropped, {"job": j, "reason": reason, "at": at}) for j in jobs]

    return list(_batches(folder, "drop", parse))


def drop_from_batches(folder: Path, job: str) -> None:
    """Each batch drop naming `job` written again without it (the new file first, under a
    name that sorts the same, then the old one removed: a crash in between leaves the same
    drops twice, never one lost)."""
    for name in _batch_files(folder):
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8"))
        if job not in data["jobs"]:
            continue
        kept = {**data, "jobs": [j for j in data["jobs"] if j != job]}
        write_atomic(folder / _batch_name(data["at"]), kept, exclusive=True)
        path.unlink()


def _batch_name(at: str) -> str:
    """A batch record's file name: it sorts by time, and is never reused."""
    return f"{re.sub(r'[^0-9]', '', at)[:20]}-{secrets.token_hex(4)}.json"


def _batch_files(folder: Path) -> list[str]:
    """The batch records in `folder`, oldest first (their names start with their time)."""
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def _batches(folder: Path, kind: str, parse: Callable[[dict[str, Any]], list[T]]) -> Iterator[T]:
    """The items of each batch record in `folder` (drops or cancels of many jobs at once),
    oldest batch first. One that cannot be read stops the round: which jobs it names, and so
    which must not run, is unknown."""
    for name in _batch_files(folder):
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            items = parse(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # RecordInvalid: ValueError
            raise ReconcileError(
                f"damaged {kind} record ({exc}): the jobs it names are unknown",
                path,
                hint="no job is acted on until this is mended; if it is beyond repair, "
                "move it aside and run oellm cancel again for the jobs to stop",
            ) from None
        yield from items
