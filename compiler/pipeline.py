"""The compiler from end to end: compose, interpolate the sweep, expand, compile the points
stage by stage (one point is `point_work.py`'s), check across the jobs, and assemble the bundle
and its lockfile in memory (writing is `write.py`'s job).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.bundle_files import LOCK_NAME, PLAN_NAME
from oellm.lockfile import writer
from oellm.lockfile.model import ArrayGroup, Lock, LockJob, Project

from . import array_groups, fanout
from .compose import compose
from .errors import ConfigError, Origin, did_you_mean, fail
from .expand import expand
from .interpolate import Interpolator
from .library import Library
from .limits import check_bundle_limits, check_sweep_size
from .megatron_checks import Loader, check_loads
from .megatron_source import schema_from
from .overrides import COMMAND_LINE
from .plan import plan_text
from .point_work import JobHook, PointWork, merge
from .provenance import compiled_with
from .siblings import Sibling, SiblingIndex, base_references, point_references, stage_order
from .staging import FileSink
from .sweep_point import Point
from .tree import origin_of


@dataclass(frozen=True)
class CompileRequest:
    experiment: Path | None = None
    config_ref: str | None = None
    config_dirs: Sequence[Path] = ()
    overrides: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    moved: Mapping[str, str] = field(default_factory=dict)
    # The folder the bundle is for: the lockfile records paths relative to it.
    bundle_dir: Path | None = None


@dataclass(frozen=True)
class CompiledBundle:
    """A compiled bundle: file name (relative) -> bytes (in memory, or staged in a folder),
    plus the lockfile's records."""

    files: MutableMapping[str, bytes]
    lock: Lock

    @functools.cached_property
    def lock_json(self) -> dict[str, Any]:
        """The lockfile as JSON data, every job at once (for tools and tests)."""
        return writer.to_json(self.lock)


Progress = Callable[[int, int], None]


def compile_bundle(
    request: CompileRequest,
    progress: Progress | None = None,
    on_job: JobHook | None = None,
    files: MutableMapping[str, bytes] | None = None,
) -> CompiledBundle:
    """`files` receives each file as it is produced (`write.stage` gives a staging folder, so
    that a large sweep is not held in memory); by default they are kept in a dict."""
    try:
        # A fork's Megatron arguments, when a --config-dir holds its megatron.schema.json.
        with schema_from(request.config_dirs):
            return _compile(request, progress, on_job, {} if files is None else files)
    except RecursionError:
        # A backstop: the loader, the overrides and the resolver each bound their depth.
        where = request.experiment or request.config_ref or COMMAND_LINE
        raise fail(
            "the config is nested too deeply to compile",
            Origin(str(where), 1, 1),
            hint="flatten deeply nested mappings, lists or dotted keys",
        ) from None


def _compile(
    request: CompileRequest,
    progress: Progress | None,
    on_job: JobHook | None,
    files: MutableMapping[str, bytes],
) -> CompiledBundle:
    library = Library.for_experiment(request.experiment, request.config_dirs)
    composed = compose(library, request.experiment, request.config_ref, request.overrides)
    base, origins = composed.tree, composed.origins

    sweep = (
        Interpolator(base, origins, request.env, keep_escaped="sweep").resolve(("sweep",))
        if "sweep" in base
        else None
    )
    check_sweep_size(base, request.env, origins, sweep)
    points = expand(sweep, lambda rel: origin_of(origins, ("sweep", *rel)))
    overridden = [
        o.split("=", 1)[0].lstrip("+")
        for o in request.overrides
        if "=" in o and not o.startswith("~")
    ]
    base_refs = base_references(base, origins)
    # Only points that reference a sibling are listed (a large sweep has many that do not).
    refs = point_references(points, sweep, base_refs)
    order = stage_order(points, refs)
    index = SiblingIndex(points)
    by_stage: dict[str | None, list[Point]] = {}
    for point in points:
        stage = point.values.get("stage")
        by_stage.setdefault(stage if isinstance(stage, str) else None, []).append(point)

    # Only the jobs of a referenced stage are kept whole, for their dependents to read.
    referenced = {r.stage for rs in refs.values() for r in rs}
    seen: dict[int, Sibling | None] = {}
    work = PointWork(
        base,
        origins,
        request.env,
        overridden,
        refs,
        index,
        seen,
        referenced,
        files,
        keep_jobs=on_job is not None,
    )
    done, members, loaders = _compile_points(
        len(points), [by_stage.get(stage, []) for stage in order], work, progress, on_job
    )
    jobs = [entry for _, entry in sorted(done.items()) if entry is not None]
    if not jobs:
        raise fail("the sweep's filters removed every job", origin_of(origins, ("sweep",)))
    max_jobs = check_bundle_limits(base, request.env, origins, jobs)
    check_loads(loaders)
    grouped = array_groups.group(members, {j.name: j for j in jobs}, files)
    files.update(grouped.scripts)
    if grouped.members:
        jobs = [grouped.members.get(j.name, j) for j in jobs]
    project = base_project(base, request.env, origins)
    if max_jobs is not None:  # the reconciler's default count budget per round (budget.py)
        project["max_jobs"] = max_jobs
    moved = _moved(base, request.moved, {j.name for j in jobs}, origins)
    provenance = compiled_with(
        experiment=request.experiment,
        config_ref=request.config_ref,
        config_dirs=request.config_dirs,
        overrides=request.overrides,
        moved=request.moved,
        bundle_dir=request.bundle_dir,
    )
    draft = _lock(Project(**project), jobs, moved, grouped.arrays, provenance)
    return _with_lock(files, draft)


def _compile_points(
    total: int,
    stages: list[list[Point]],
    work: PointWork,
    progress: Progress | None,
    on_job: JobHook | None,
) -> tuple[dict[int, LockJob | None], list[array_groups.Member], list[Loader]]:
    """Each point's lock entry (None: filtered), stage by stage, and the array members and
    checkpoint loaders among them. A large stage is compiled by several processes."""
    done: dict[int, LockJob | None] = {}  # point index -> lock entry, None if filtered
    names: dict[str, Point] = {}
    members: list[array_groups.Member] = []
    loaders: list[Loader] = []
    for stage_points in stages:
        count = 1 if on_job is not None else fanout.workers(len(stage_points))
        before = len(done)

        def told(number: int, before: int = before) -> None:
            if progress is not None:
                progress(before + number, total)

        results = fanout.fan_out(stage_points, work, work.files, count, told)
        # To the end: a worker's files are taken in after its last result; on an error
        # found here (a name clash), closed at once, which stops the workers.
        with contextlib.closing(results):
            merge(stage_points, results, work, done, names, members, loaders, on_job)
        if count > 1 and progress is not None:
            progress(len(done), total)
    return done, members, loaders


def with_state_key(bundle: CompiledBundle, key: str) -> CompiledBundle:
    """The bundle with the tag key of the state it follows recorded in its lockfile: kept
    when its state dir moved (`compile --move-state`), so that a state dir lost later still
    finds its jobs in SLURM by tag. A lockfile field like any other (it is in the bundle id)."""
    lock = bundle.lock
    draft = dataclasses.replace(lock, project=dataclasses.replace(lock.project, key=key))
    files = bundle.files if isinstance(bundle.files, FileSink) else dict(bundle.files)
    return _with_lock(files, draft)


def _with_lock(files: MutableMapping[str, bytes], draft: Lock) -> CompiledBundle:
    """The bundle of `files` with the lockfile of `draft` sealed and written, and its plan.
    Staged (or checked) files are changed in place, the lockfile given in pieces (never one
    string in memory)."""
    if isinstance(files, FileSink):
        with files.text(LOCK_NAME) as handle:
            lock = writer.dump_sealed(draft, handle)
    else:
        text = io.StringIO()
        lock = writer.dump_sealed(draft, text)
        files[LOCK_NAME] = text.getvalue().encode("utf-8")
    files[PLAN_NAME] = plan_text(lock).encode("utf-8")
    return CompiledBundle(files, lock)


def base_project(base: dict[str, Any], env: Mapping[str, str], origins: Any) -> dict[str, Any]:
    try:
        project = Interpolator(base, origins, env).resolve(("project",))
    except ConfigError as error:
        # The project names the whole bundle (and where its state lives), so it cannot vary.
        raise ConfigError(
            dataclasses.replace(
                p,
                hint="project.* names the whole experiment and cannot use swept values; "
                "name each job with job.name, or set project.name inside the sweep",
            )
            for p in error.problems
        ) from None
    for key in ("name", "output_dir", "state_dir"):
        # Jobs are validated one by one; the project as the whole bundle sees it is checked
        # here (a sweep may set it per job while the base holds something else).
        if key in project and not isinstance(project[key], str):
            raise fail(
                f"must be text, not {type(project[key]).__name__} {project[key]!r}",
                origin_of(origins, ("project", key)),
                key=f"project.{key}",
                hint="project.* names the whole experiment: give it one text value",
            )
    return {k: project[k] for k in ("name", "output_dir", "state_dir") if k in project}


def _moved(
    base: dict[str, Any], given: Mapping[str, str], names: set[str], origins: Any
) -> dict[str, str]:
    """`moved:` from the config plus --moved: each new name must be a job of this bundle."""
    moved = {**(base.get("moved") or {}), **given}
    for old, new in sorted(moved.items()):
        if new not in names:
            raise fail(
                f"moved: '{old}' -> '{new}', but this bundle has no job '{new}'",
                origin_of(origins, ("moved", old)),
                key="moved",
                hint=did_you_mean(new, names),
            )
        if old in names:
            raise fail(
                f"moved: '{old}' is still a job of this bundle",
                origin_of(origins, ("moved",)),
                key="moved",
            )
    return dict(sorted(moved.items()))


def _lock(
    project: Project,
    jobs: Sequence[LockJob],
    moved: Mapping[str, str] | None = None,
    groups: Mapping[str, ArrayGroup] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Lock:
    """The lockfile's records, its `bundle_id` still to be made (`writer.dump_sealed`)."""
    # The provenance stays out of the bundle id: a new oellm version or another spelling of
    # the same arguments is not another bundle for the reconciler.
    return Lock("", project, tuple(jobs), moved or {}, groups or {}, provenance or None)


__all__ = ["COMMAND_LINE", "CompileRequest", "CompiledBundle", "compile_bundle"]
