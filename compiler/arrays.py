"""`slurm.array: true`: the jobs of one stage with identical resources become one SLURM job
array. Each member keeps its own script (reviewed and diffed like any job's); one shared
script per array picks the member by `SLURM_ARRAY_TASK_ID` and runs it.

Every task of an array writes into one `--output` pattern, so a member's `log_path` is the
array's `<project.output_dir>/arrays/<stage>/slurm-%A_%a.log`; its `log_path_current` is still
its own (`current_<index>.log`). An array never holds more than the site's `max_array_size`
tasks: a larger group is split into several arrays.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Origin, fail
from .limits import limits_of
from .load import Path_
from .render import Directive, array_directives, render_array_script
from .tree import origin_of

NO_STAGE = "jobs"
# Where the default job.log_path comes from (as the library names its own files); one set
# anywhere else is the user's.
DEFAULT_JOB = "<oellm>/config/job/default.yaml"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def is_member(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> bool:
    """Whether this job runs as a task of an array; refuses what an array task cannot be."""
    slurm = config["slurm"]
    if not slurm.get("array"):
        return False
    job = config["job"]
    where = origin_of(origins, ("slurm", "array"))
    if int(job.get("chain_repeat", 1)) > 1:
        raise fail(
            "slurm.array and job.chain_repeat cannot be combined: each link of a chain waits "
            "for the one before it, so links cannot share one array",
            origin_of(origins, ("job", "chain_repeat")) or where,
            key="job.chain_repeat",
            hint="set slurm.array false for chained jobs",
        )
    if job.get("dependency") == "slurm":
        raise fail(
            "slurm.array and job.dependency: slurm cannot be combined: the tasks of one array "
            "would each wait for a different upstream job",
            origin_of(origins, ("job", "dependency")) or where,
            key="job.dependency",
            hint="leave job.dependency at its default (the reconciler gates each task)",
        )
    log_origin = origin_of(origins, ("job", "log_path"))
    if log_origin is not None and log_origin.file != DEFAULT_JOB:
        raise fail(
            "slurm.array: every task of an array writes to the array's one log, so "
            "job.log_path cannot be set",
            log_origin,
            key="job.log_path",
            hint="remove job.log_path: array logs go to "
            "<project.output_dir>/arrays/<stage>/slurm-%A_%a.log, and each job's "
            "log_path_current (current_<index>.log) points at its own",
        )
    for number, event in enumerate(job.get("log_events") or []):
        for which, path in enumerate(event.get("paths") or []):
            if "%j" in str(path):
                raise fail(
                    "slurm.array: %j in a log event path is the task's own job id, which only "
                    "the task knows; name an array task's files by %A_%a",
                    origin_of(origins, ("job", "log_events", number, "paths", which)) or where,
                    key=f"job.log_events.{number}.paths",
                    hint="write %A_%a (the array's job id and the task's index) instead of %j",
                )
    if "array" in slurm["sbatch"]:
        raise fail(
            "slurm.array builds the --array option itself; slurm.sbatch.array cannot be set too",
            origin_of(origins, ("slurm", "sbatch", "array")) or where,
            key="slurm.sbatch.array",
            hint="remove slurm.sbatch.array; limit concurrent tasks with slurm.array_throttle",
        )
    return True


def member_log_path(config: Mapping[str, Any]) -> str:
    """The one `--output` every task of this stage's arrays writes to (SLURM expands `%A` to
    the array's job id and `%a` to the task's index)."""
    stage = _UNSAFE.sub("_", config["stage"]) if config.get("stage") else NO_STAGE
    return f"{config['project']['output_dir']}/arrays/{stage}/slurm-%A_%a.log"


@dataclass(frozen=True)
class Member:
    """What grouping needs of one array job, taken while its config is at hand."""

    name: str
    stage: str | None
    directives: tuple[Directive, ...]  # all but --job-name: same ones, one array
    throttle: int | None
    max_size: int | None
    project: str
    state_dir: str  # where the reconciler keeps each submitted member's script, by sha256


def member(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> Member:
    slurm = config["slurm"]
    throttle = slurm.get("array_throttle")
    max_size = limits_of(config).get("max_array_size")
    return Member(
        name=config["job"]["name"],
        stage=config.get("stage"),
        directives=tuple(array_directives(config, origins)),
        throttle=int(throttle) if throttle else None,
        max_size=int(max_size) if max_size else None,
        project=config["project"]["name"],
        state_dir=config["project"]["state_dir"],
    )


def group(
    members: Sequence[Member], entries: Mapping[str, dict[str, Any]], scripts: Mapping[str, bytes]
) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """Put members of one stage and identical resources into arrays, in job order; set
    `array_group` and `array_index` on their lock entries. Returns the lockfile's `arrays`
    and the shared scripts, by bundle path."""
    classes: dict[tuple[Any, ...], list[Member]] = {}
    for one in members:
        key = (one.stage, one.directives, one.throttle, one.max_size)
        classes.setdefault(key, []).append(one)
    per_stage: dict[str | None, int] = {}
    chunked: list[tuple[str | None, list[Member]]] = []
    for (stage, *_), together in classes.items():
        size = together[0].max_size or len(together)
        for start in range(0, len(together), size):
            chunked.append((stage, together[start : start + size]))
            per_stage[stage] = per_stage.get(stage, 0) + 1
    arrays: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    numbered: dict[str | None, int] = {}
    for stage, tasks in chunked:
        name = _UNSAFE.sub("_", stage) if stage else NO_STAGE
        if per_stage[stage] > 1:
            numbered[stage] = numbered.get(stage, 0) + 1
            name = f"{name}-{numbered[stage]}"
        # Stage names may look like these names (`x-1`, `jobs`): never give one name twice.
        candidate, tries = name, 1
        while name in arrays:
            tries += 1
            name = f"{candidate}.{tries}"
        first = tasks[0]
        listed = []
        for index, one in enumerate(tasks):
            entry = entries[one.name]
            entry["array_group"] = name
            entry["array_index"] = index
            listed.append((index, entry["script"], entry["sha256"]))
        path = f"jobs/arrays/{name}.sbatch"
        text = render_array_script(
            group=name,
            stage=stage,
            project=first.project,
            directives=[("--job-name", name), *first.directives],
            tasks=listed,
            snapshots=f"{first.state_dir}/scripts",
        ).encode("utf-8")
        files[path] = text
        arrays[name] = {
            "script": path,
            "sha256": hashlib.sha256(text).hexdigest(),
            "stage": stage,
            "size": len(tasks),
            "throttle": first.throttle,
        }
    assert not set(files) & set(scripts), "array scripts live in their own folder"
    return arrays, files
