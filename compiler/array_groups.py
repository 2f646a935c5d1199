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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oellm.lockfile.model import ArrayGroup, LockJob, replaced

from .limits import limits_of
from .render import render_array_script
from .script import ScriptPlan
from .tree import KeyPath
from .words import Directive

NO_STAGE = "jobs"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def member_log_path(config: Mapping[str, Any]) -> str:
    """The one `--output` every task of this stage's arrays writes to (SLURM expands `%A` to
    the array's job id and `%a` to the task's index)."""
    stage = _UNSAFE.sub("_", config["stage"]) if config.get("stage") else NO_STAGE
    return f"{config['project']['output_dir']}/arrays/{stage}/slurm-%A_%a.log"


class MemberModel:
    """The configs of the array members made from one model config (`leaves.Leaves`): the
    model with the array's log path, differing from it at the model's paths and the log
    path (which the member log path of each config sets, whatever the model's paths are)."""

    def __init__(self, model: dict[str, Any], paths: Sequence[KeyPath]) -> None:
        self.model = with_member_log_path(model)
        self.paths = list(paths)
        if _LOG_PATH in self.paths:
            self._at = self.paths.index(_LOG_PATH)
        else:
            self._at = len(self.paths)
            self.paths.append(_LOG_PATH)

    def values(self, values: Sequence[Any], config: Mapping[str, Any]) -> list[Any]:
        """A member's values at `paths`: those it was made with, and the log path of its
        `config` (a config `with_member_log_path` made)."""
        out = list(values)
        out[self._at : self._at + 1] = [config["job"]["log_path"]]
        return out


_LOG_PATH: KeyPath = ("job", "log_path")


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


def with_member_log_path(config: dict[str, Any]) -> dict[str, Any]:
    """The config of an array member: its `job.log_path` is the array's (a new mapping; the
    given one is not changed)."""
    return {**config, "job": {**config["job"], "log_path": member_log_path(config)}}


def member(config: Mapping[str, Any], plan: ScriptPlan) -> Member:
    slurm = config["slurm"]
    throttle = slurm.get("array_throttle")
    max_size = limits_of(config).get("max_array_size")
    return Member(
        name=config["job"]["name"],
        stage=config.get("stage"),
        directives=plan.array_directives(),
        throttle=int(throttle) if throttle else None,
        max_size=int(max_size) if max_size else None,
        project=config["project"]["name"],
        state_dir=config["project"]["state_dir"],
    )


@dataclass(frozen=True)
class Grouped:
    """The arrays of a bundle: the lockfile's `arrays`, the member jobs with their
    `array_group` and `array_index` set (by name), and the shared scripts by bundle path."""

    arrays: dict[str, ArrayGroup]
    members: dict[str, LockJob]
    scripts: dict[str, bytes]


def group(
    members: Sequence[Member], entries: Mapping[str, LockJob], scripts: Collection[str]
) -> Grouped:
    """Put members of one stage and identical resources into arrays, in job order."""
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
    arrays: dict[str, ArrayGroup] = {}
    grouped: dict[str, LockJob] = {}
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
            grouped[one.name] = replaced(
                entry, array_group=name, array_index=index, array_throttle=first.throttle
            )
            listed.append((index, entry.script, entry.sha256))
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
        arrays[name] = ArrayGroup(
            name=name,
            script=path,
            sha256=hashlib.sha256(text).hexdigest(),
            size=len(tasks),
            throttle=first.throttle,
            stage=stage,
        )
    assert not any(path in scripts for path in files), "array scripts live in their own folder"
    return Grouped(arrays, grouped, files)
