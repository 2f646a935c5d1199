"""Compare two bundles, given as file name -> bytes: which jobs were added, removed, renamed or
changed (params, lock fields, script), and the unified diff of every file that differs.

Pure: the callers read the bundles (a folder, a git revision, a compile in memory).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from oellm.bundle_files import LOCK_NAME

from .errors import fail
from .textdiff import unified

# Lock fields shown apart (params), compared as the script's bytes (script, sha256) or that are
# the job's identity (name). The sweep position (index) changes whenever sweep values are
# reordered and means nothing to the scheduler, so it is counted, not reported as a change.
_NOT_FIELDS = frozenset({"name", "params", "script", "sha256", "index"})
# Stands in for the job name when looking for renames (a rendered script holds no NUL).
_NAME_SLOT = "\x00"


class _Absent:
    """A key that one side does not have (as opposed to one set to null)."""

    def __repr__(self) -> str:
        return "(unset)"


ABSENT: Final = _Absent()

RenameKind = Literal["detected", "moved"]
FileStatus = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class ValueChange:
    """One key whose value differs; `old` or `new` is ABSENT when that side lacks the key."""

    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class JobEntry:
    """A job that only one bundle has."""

    name: str
    stage: str | None
    script: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class JobDiff:
    """A job both bundles have: under the same name, or renamed (`rename` says how)."""

    name: str
    old_name: str
    stage: str | None
    rename: RenameKind | None
    script: str
    old_script: str
    params: tuple[ValueChange, ...]
    fields: tuple[ValueChange, ...]
    script_changed: bool
    script_diff: str

    @property
    def differs(self) -> bool:
        return bool(self.params or self.fields or self.script_changed)


@dataclass(frozen=True)
class IgnoredMove:
    """A `moved` entry that did not apply, and why (an old entry that was applied long ago is
    normal, a typo is not: both are shown)."""

    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class FileDiff:
    name: str
    status: FileStatus
    diff: str


@dataclass(frozen=True)
class BundleDiff:
    added: tuple[JobEntry, ...]
    removed: tuple[JobEntry, ...]
    changed: tuple[JobDiff, ...]
    renamed: tuple[JobDiff, ...]
    unchanged: int
    reordered: int
    project: tuple[ValueChange, ...]
    lock_fields: tuple[ValueChange, ...]  # top-level lockfile keys besides project and jobs
    files: tuple[FileDiff, ...]
    ignored_moves: tuple[IgnoredMove, ...]

    @property
    def identical(self) -> bool:
        """Byte for byte: the exit status of `diff` and `compile --check` follows this."""
        return not self.files


_NOT_PLAN = ("bundle_id", "jobs", "project", "compiled_with")


@dataclass(frozen=True)
class _Side:
    project: dict[str, Any]
    jobs: dict[str, dict[str, Any]]  # name -> lock entry, in lock order
    files: Mapping[str, bytes]
    top: dict[str, Any]  # the other top-level lockfile keys, but for bundle_id (a digest)

    @property
    def moved(self) -> dict[str, str]:
        """The renames the lockfile records (the config's `moved:` and `--moved` at compile)."""
        found = self.top.get("moved")
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def script(self, name: str) -> bytes | None:
        return self.files.get(str(self.jobs[name].get("script", "")))


def compare(
    old: Mapping[str, bytes], new: Mapping[str, bytes], moved: Mapping[str, str] | None = None
) -> BundleDiff:
    """Compare bundle OLD with bundle NEW. A side without a lockfile has no jobs (a bundle not
    written yet). `moved` maps old job names to new ones, reported as renames when they apply,
    added to those NEW's lockfile records; only the entries of `moved` that do not apply are
    reported (recorded ones are history, applied by earlier versions).
    """
    a, b = _side(old, "old"), _side(new, "new")
    files = _file_diffs(old, new)
    moves, ignored = _moves(a, b, b.moved, dict(moved or {}))
    moves.update(_detected_renames(a, b, moves))

    changed: list[JobDiff] = []
    renamed: list[JobDiff] = []
    unchanged = reordered = 0
    renamed_to = {new_name: old_name for old_name, (new_name, _) in moves.items()}
    script_diffs = {f.name: f.diff for f in files}
    for name, job in b.jobs.items():
        if name in a.jobs:
            old_name, kind = name, None
        elif name in renamed_to:
            old_name = renamed_to[name]
            kind = moves[old_name][1]
        else:
            continue
        diff = _job_diff(a, b, old_name, name, kind, script_diffs)
        reordered += a.jobs[old_name].get("index") != job.get("index")
        if kind is not None:
            renamed.append(diff)
        elif diff.differs:
            changed.append(diff)
        else:
            unchanged += 1

    return BundleDiff(
        added=tuple(_entry(b, n) for n in b.jobs if n not in a.jobs and n not in renamed_to),
        removed=tuple(_entry(a, n) for n in a.jobs if n not in b.jobs and n not in moves),
        changed=tuple(changed),
        renamed=tuple(renamed),
        unchanged=unchanged,
        reordered=reordered,
        project=_changes(a.project, b.project),
        lock_fields=_changes(a.top, b.top),
        files=files,
        ignored_moves=tuple(ignored),
    )


def _side(files: Mapping[str, bytes], which: str) -> _Side:
    raw = files.get(LOCK_NAME)
    if raw is None:
        return _Side({}, {}, files, {})
    try:
        lock = json.loads(raw.decode("utf-8"))
        jobs = {str(job["name"]): job for job in lock["jobs"]}
        project = dict(lock.get("project", {}))
        # bundle_id is a digest and compiled_with how the bundle was made (oellm's version, the
        # compile arguments): neither is the plan; a change shows in plan.lock.json's diff.
        top = {k: v for k, v in lock.items() if k not in _NOT_PLAN}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(
            f"the {which} bundle's {LOCK_NAME} cannot be read: {exc}",
            hint="recompile the bundle; a lockfile is written by `oellm compile`, not by hand",
        ) from None
    return _Side(project, jobs, files, top)


def _moves(
    a: _Side, b: _Side, recorded: dict[str, str], explicit: dict[str, str]
) -> tuple[dict[str, tuple[str, RenameKind]], list[IgnoredMove]]:
    moved = {**recorded, **explicit}
    targets: dict[str, str] = {}
    for old_name, new_name in sorted(moved.items()):
        if new_name in targets:
            raise fail(
                f"moved: '{targets[new_name]}' and '{old_name}' both move to '{new_name}'",
                hint="each job can take the history of one old job only",
            )
        targets[new_name] = old_name
    applied: dict[str, tuple[str, RenameKind]] = {}
    ignored: list[IgnoredMove] = []
    for old_name, new_name in sorted(moved.items()):
        reason = _why_not_moved(a, b, old_name, new_name)
        if reason is None:
            applied[old_name] = (new_name, "moved")
        elif explicit.get(old_name) == new_name:
            ignored.append(IgnoredMove(old_name, new_name, reason))
    return applied, ignored


def _why_not_moved(a: _Side, b: _Side, old_name: str, new_name: str) -> str | None:
    if old_name not in a.jobs:
        if new_name in a.jobs:
            return f"already applied: the old bundle has '{new_name}' and no '{old_name}'"
        return f"the old bundle has no job '{old_name}'"
    if new_name not in b.jobs:
        return f"the new bundle has no job '{new_name}'"
    if old_name in b.jobs:
        return f"'{old_name}' is still a job of the new bundle"
    if new_name in a.jobs:
        return f"'{new_name}' is already a job of the old bundle"
    return None


def _detected_renames(
    a: _Side, b: _Side, moves: Mapping[str, tuple[str, RenameKind]]
) -> dict[str, tuple[str, RenameKind]]:
    """Pair a removed job with an added one when their params are equal and their scripts are
    equal once each job's own name is blanked out; only pairs that are unique both ways."""
    taken = {new_name for new_name, _ in moves.values()}
    gone = [n for n in a.jobs if n not in b.jobs and n not in moves]
    came = [n for n in b.jobs if n not in a.jobs and n not in taken]
    if not gone or not came:
        return {}
    olds = _by_shape(a, gone)
    news = _by_shape(b, came)
    found: dict[str, tuple[str, RenameKind]] = {}
    for shape, old_names in olds.items():
        new_names = news.get(shape, [])
        if len(old_names) == 1 and len(new_names) == 1:
            found[old_names[0]] = (new_names[0], "detected")
    return found


def _by_shape(side: _Side, names: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    shapes: dict[tuple[str, str], list[str]] = {}
    for name in names:
        script = side.script(name)
        if script is None:
            continue
        blanked = _text(script).replace(name, _NAME_SLOT)
        digest = hashlib.sha256(blanked.encode("utf-8")).hexdigest()
        shape = (_canon(side.jobs[name].get("params", {})), digest)
        shapes.setdefault(shape, []).append(name)
    return shapes


def _job_diff(
    a: _Side,
    b: _Side,
    old_name: str,
    name: str,
    kind: RenameKind | None,
    script_diffs: Mapping[str, str],
) -> JobDiff:
    old_job, new_job = a.jobs[old_name], b.jobs[name]
    old_path, new_path = str(old_job.get("script", "")), str(new_job.get("script", ""))
    old_script, new_script = a.script(old_name), b.script(name)
    script_changed = old_script != new_script
    if not script_changed:
        script_diff = ""
    elif old_path == new_path and old_path in script_diffs:
        script_diff = script_diffs[old_path]
    else:
        script_diff = unified(old_script, new_script, old_path, new_path)
    fields = {k: v for k, v in old_job.items() if k not in _NOT_FIELDS}
    new_fields = {k: v for k, v in new_job.items() if k not in _NOT_FIELDS}
    stage = new_job.get("stage")
    return JobDiff(
        name=name,
        old_name=old_name,
        stage=stage if isinstance(stage, str) else None,
        rename=kind,
        script=new_path,
        old_script=old_path,
        params=_changes(old_job.get("params", {}), new_job.get("params", {})),
        fields=_changes(fields, new_fields),
        script_changed=script_changed,
        script_diff=script_diff,
    )


def _entry(side: _Side, name: str) -> JobEntry:
    job = side.jobs[name]
    stage = job.get("stage")
    return JobEntry(
        name,
        stage if isinstance(stage, str) else None,
        str(job.get("script", "")),
        dict(job.get("params", {})),
    )


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[ValueChange, ...]:
    found = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, ABSENT), new.get(key, ABSENT)
        # Compared as JSON text: in Python True == 1 == 1.0, in a lockfile they differ.
        if _canon(before) != _canon(after):
            found.append(ValueChange(key, before, after))
    return tuple(found)


def _canon(value: Any) -> str:
    if value is ABSENT:
        return "\x00absent"
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _file_diffs(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[FileDiff, ...]:
    found = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        status: FileStatus = (
            "added" if before is None else "removed" if after is None else "changed"
        )
        found.append(FileDiff(name, status, unified(before, after, name, name)))
    return tuple(found)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
