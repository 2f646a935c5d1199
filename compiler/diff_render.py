"""Show a bundle comparison: the text `oellm diff` prints, its `--json` form, and the text of
`compile --check` (every differing file as a unified diff).
"""

from __future__ import annotations

import json
from typing import Any

from oellm.bundle_files import LOCK_NAME, PLAN_NAME

from .diff import ABSENT, BundleDiff, JobDiff, JobEntry, ValueChange

_RESET = "\x1b[0m"
_STYLES = {
    "bold": "\x1b[1m",
    "green": "\x1b[32m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "cyan": "\x1b[36m",
}


def _paint(text: str, style: str, color: bool) -> str:
    """Style each line on its own, so that a pager that cuts lines keeps the colors right."""
    if not color:
        return text
    return "\n".join(f"{_STYLES[style]}{ln}{_RESET}" if ln else ln for ln in text.split("\n"))


def summary(result: BundleDiff) -> str:
    """The first lines of every rendering: counts, then what differs outside the jobs."""
    if result.identical:
        return f"bundles are identical: {_jobs(result.unchanged)}\n"
    counts = (
        f"{len(result.added)} added, {len(result.removed)} removed, "
        f"{len(result.changed)} changed, {len(result.renamed)} renamed, "
        f"{result.unchanged} unchanged"
    )
    lines = [f"bundles differ: {counts}"]
    if result.reordered:
        lines.append(f"{_jobs(result.reordered)} changed position in the sweep")
    lines += [f"project.{c.key}: {_show(c.old)} -> {_show(c.new)}" for c in result.project]
    lines += [f"lock {c.key}: {_show(c.old)} -> {_show(c.new)}" for c in result.lock_fields]
    for move in result.ignored_moves:
        lines.append(f"moved {move.old} -> {move.new} ignored: {move.reason}")
    job_files = _job_files(result)
    other = [f.name for f in result.files if f.name not in job_files]
    if other:
        lines.append("files that differ: " + ", ".join(other))
    return "\n".join(lines) + "\n"


def _jobs(n: int) -> str:
    return f"{n} job{'' if n == 1 else 's'}"


def _job_files(result: BundleDiff) -> set[str]:
    """Files the job sections explain already (the scripts)."""
    names = {LOCK_NAME, PLAN_NAME}
    names.update(e.script for e in (*result.added, *result.removed))
    for job in (*result.changed, *result.renamed):
        names.update({job.script, job.old_script})
    # The lock and plan always change with the jobs; name them only when nothing else did.
    if not (result.added or result.removed or result.changed or result.renamed):
        names -= {LOCK_NAME, PLAN_NAME}
    return names


def render_text(result: BundleDiff, color: bool = False) -> str:
    """The summary, then one section per job: added, removed, renamed, changed, each in the
    order of its bundle's lockfile."""
    parts = [_paint(summary(result), "bold", color)]
    for entry in result.added:
        parts.append(_entry_text("added", entry, "green", color))
    for entry in result.removed:
        parts.append(_entry_text("removed", entry, "red", color))
    for job in (*result.renamed, *result.changed):
        parts.append(_job_text(job, color))
    return "\n".join(parts)


def _entry_text(what: str, entry: JobEntry, style: str, color: bool) -> str:
    lines = [_paint(f"{what} {entry.name}{_stage(entry.stage)}", style, color)]
    lines += [f"  {k} = {_show(v)}" for k, v in entry.params.items()]
    return "\n".join(lines) + "\n"


def _job_text(job: JobDiff, color: bool) -> str:
    if job.rename is None:
        head = f"changed {job.name}{_stage(job.stage)}"
    else:
        why = "moved" if job.rename == "moved" else "same params and script up to the name"
        where = f"stage {job.stage}; " if job.stage is not None else ""
        head = f"renamed {job.old_name} -> {job.name} ({where}{why})"
    lines = [_paint(head, "yellow", color)]
    if job.params:
        lines.append("  params:")
        lines += [f"    {c.key}: {_show(c.old)} -> {_show(c.new)}" for c in job.params]
    lines += [f"  {c.key}: {_show(c.old)} -> {_show(c.new)}" for c in job.fields]
    if job.script_changed:
        lines += ["  " + line for line in _paint_diff(job.script_diff, color).split("\n") if line]
    return "\n".join(lines) + "\n"


def _stage(stage: str | None) -> str:
    return "" if stage is None else f" (stage {stage})"


def _show(value: Any) -> str:
    if value is ABSENT:
        return "(unset)"
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("+", "green"), ("-", "red"), ("@@", "cyan"))


def _paint_diff(diff: str, color: bool) -> str:
    if not color:
        return diff
    painted = []
    for line in diff.split("\n"):
        style = next((s for prefix, s in _DIFF_STYLES if line.startswith(prefix)), None)
        painted.append(line if style is None else _paint(line, style, color))
    return "\n".join(painted)


def check_text(result: BundleDiff, color: bool = False) -> str:
    """For `compile --check`: the summary and the unified diff of every file that differs,
    lockfile and plan included, in file name order."""
    parts = [_paint(summary(result), "bold", color)]
    parts += [_paint_diff(f.diff, color) for f in result.files]
    return "\n".join(parts)


# `diff --json`'s version: raised only for a breaking change; new fields are additive.
DIFF_SCHEMA_VERSION = 1


def render_json(result: BundleDiff) -> dict[str, Any]:
    """The `--json` form (schemas/diff.schema.json). A key absent from one side is left out of
    its change (`old`/`new`)."""
    return {
        "schema_version": DIFF_SCHEMA_VERSION,
        "identical": result.identical,
        "summary": {
            "added": len(result.added),
            "removed": len(result.removed),
            "changed": len(result.changed),
            "renamed": len(result.renamed),
            "unchanged": result.unchanged,
            "reordered": result.reordered,
        },
        "project": [_change_json(c) for c in result.project],
        "lock": [_change_json(c) for c in result.lock_fields],
        "added": [_entry_json(e) for e in result.added],
        "removed": [_entry_json(e) for e in result.removed],
        "renamed": [_job_json(j) for j in result.renamed],
        "changed": [_job_json(j) for j in result.changed],
        "ignored_moves": [
            {"old": m.old, "new": m.new, "reason": m.reason} for m in result.ignored_moves
        ],
        "files": [{"name": f.name, "status": f.status} for f in result.files],
    }


def _entry_json(entry: JobEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "stage": entry.stage,
        "script": entry.script,
        "params": dict(entry.params),
    }


def _job_json(job: JobDiff) -> dict[str, Any]:
    return {
        "name": job.name,
        "old_name": job.old_name,
        "stage": job.stage,
        "rename": job.rename,
        "script": job.script,
        "old_script": job.old_script,
        "params": [_change_json(c) for c in job.params],
        "fields": [_change_json(c) for c in job.fields],
        "script_changed": job.script_changed,
        "script_diff": job.script_diff,
    }


def _change_json(change: ValueChange) -> dict[str, Any]:
    shown: dict[str, Any] = {"key": change.key}
    if change.old is not ABSENT:
        shown["old"] = change.old
    if change.new is not ABSENT:
        shown["new"] = change.new
    return shown
