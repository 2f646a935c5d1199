"""The compiler from end to end: compose, interpolate the sweep, expand, resolve and validate
each job, render its script, and assemble the bundle in memory (writing is `write.py`'s job).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.bundle_files import LOCK_NAME, PLAN_NAME
from oellm.lockfile import writer
from oellm.lockfile.jsonbytes import PrettyJson
from oellm.lockfile.jsonshape import ShapedJson
from oellm.lockfile.model import (
    ArrayGroup,
    Lock,
    LockJob,
    Project,
    RestartPolicy,
    replaced,
)

from . import array_groups, fanout
from .checks import Checks, check_job, checks_for
from .compose import compose
from .errors import ConfigError, Origin, Problem, did_you_mean, fail
from .expand import Point, expand
from .interpolate import Interpolator, static_parts
from .leaves import Made
from .library import Library
from .limits import check_bundle_limits, check_sweep_size
from .megatron_checks import Loader, check_loads, loader
from .megatron_source import schema_from
from .overrides import COMMAND_LINE
from .plan import plan_text
from .provenance import compiled_with
from .reads import job_reads
from .render_shape import ShapedScripts
from .resolve import JobConfig, ResolvedParts, resolve_job
from .script import plan_script
from .siblings import (
    Sibling,
    SiblingIndex,
    base_references,
    gather,
    point_references,
    sibling_of,
    stage_order,
)
from .staging import FileSink
from .time_limits import clamp_debug_time
from .tree import Memo, by_identity, key_path, origin_of
from .validate import Validator
from .wandb import wandb_lock

# One list for every job without dependencies (a large sweep holds many lock entries).
_NO_JOBS: list[str] = []
_policies: Memo = {}  # the restart policy of each job.restart that jobs share


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
JobHook = Callable[[str, JobConfig], None]
"""Called with each job's name and resolved config (`oellm config --job`)."""


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
    work = _PointWork(
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
    work: _PointWork,
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
            _merge(stage_points, results, work, done, names, members, loaders, on_job)
        if count > 1 and progress is not None:
            progress(len(done), total)
    return done, members, loaders


def _merge(
    stage_points: list[Point],
    results: Iterator[_Made],
    work: _PointWork,
    done: dict[int, LockJob | None],
    names: dict[str, Point],
    members: list[array_groups.Member],
    loaders: list[Loader],
    on_job: JobHook | None,
) -> None:
    """Take in the results of a stage's points, in order."""
    for point, result in zip(stage_points, results, strict=True):
        done[point.index] = result.entry
        if point.values.get("stage") in work.referenced:
            work.seen[point.index] = result.sibling
        if result.entry is None:
            continue
        name = result.entry.name
        if name in names:
            raise _collision(name, names[name], point, work.job_of(point))
        names[name] = point
        if result.member is not None:
            members.append(result.member)
        if result.loader is not None:
            loaders.append(result.loader)
        if on_job is not None and result.job is not None:
            on_job(name, result.job)


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


@dataclass(frozen=True)
class _Made:
    """What compiling one sweep point gives (sent back by a worker process, `fanout.py`)."""

    entry: LockJob | None  # None: a filter removed the point
    sibling: Sibling | None = None  # for the jobs of later stages that reference it
    member: array_groups.Member | None = None  # a job of an array
    loader: Loader | None = None  # a Megatron job that loads a checkpoint
    job: JobConfig | None = None  # its resolved config, for `on_job`


class _PointWork:
    """Compiles one sweep point into its lock entry and files. Holds what every point of the
    sweep shares, and what is learnt once per shape of job (kept by each process)."""

    def __init__(
        self,
        base: dict[str, Any],
        origins: Any,
        env: Mapping[str, str],
        overridden: Sequence[str],
        refs: Mapping[int, Any],
        index: SiblingIndex,
        seen: dict[int, Sibling | None],
        referenced: set[str],
        files: MutableMapping[str, bytes],
        keep_jobs: bool,
    ) -> None:
        self.base = base
        self.origins = origins
        self.env = env
        self.overridden = overridden
        self.refs = refs
        self.index = index
        self.seen = seen  # filled in by the caller as stages are compiled
        self.referenced = referenced
        self.files = files
        self.keep_jobs = keep_jobs
        # Parts that every job shares unchanged (the base's, and values that do not depend
        # on the sweep point) are resolved, encoded and scanned once.
        self.resolved = ResolvedParts(static_parts(base))
        self.encoder = ShapedJson(PrettyJson(self.resolved.sizes), self.resolved.sizes)
        self.validate = Validator(self.resolved.sizes)
        self.scripts = ShapedScripts()  # rendered once per shape of plan
        self.checks: dict[Made, Checks] = {}  # the checks of the configs made from each model
        # Each model's array members' model.
        self.variants: dict[Made, array_groups.MemberModel] = {}

    def __call__(self, point: Point) -> _Made:
        siblings = gather(point, self.refs.get(point.index, ()), self.index, self.seen)
        job = self._resolve(point, siblings)
        if job is None:
            return _Made(None)
        upstream = list(siblings.values()) if siblings else []
        depends_on = sorted({s.name for s in upstream}) if upstream else _NO_JOBS
        entry, script, job, member = self._job(job, point, depends_on)
        written = [entry.output_dir, *(str(s.view["output_dir"]) for s in upstream)]
        reads = job_reads(job.config, written)
        if reads:
            entry = replaced(entry, reads=tuple(reads))
        files = self.files
        files[entry.script] = script
        # The job's whole resolved config, for people and tools: what the script was
        # rendered from. No origins (they hold the compiling machine's paths).
        plan = job.model
        data = None
        if plan is not None and job.values is not None:
            data = self.encoder.encode_at(plan, plan.model, plan.paths, job.values)
        files[f"jobs/{entry.name}.config.json"] = data or self.encoder.encode(job.config)
        return _Made(
            entry,
            sibling_of(job.config) if point.values.get("stage") in self.referenced else None,
            member,
            loader(entry.name, job.config, job.origins),
            job if self.keep_jobs else None,
        )

    def job_of(self, point: Point) -> JobConfig:
        """The resolved config of a point that is a job (for an error that names it)."""
        job = self._resolve(
            point, gather(point, self.refs.get(point.index, ()), self.index, self.seen)
        )
        assert job is not None
        return job

    def _resolve(self, point: Point, siblings: dict[str, Sibling] | None) -> JobConfig | None:
        if siblings is None:
            return None
        return resolve_job(
            self.base, self.origins, point, self.env, siblings, resolved=self.resolved
        )

    def _job(
        self, job: JobConfig, point: Point, depends_on: list[str]
    ) -> tuple[LockJob, bytes, JobConfig, array_groups.Member | None]:
        """The job's lock entry and script, its config as the script was planned from it (the
        debug time clamp and an array member's log path applied), and its array member."""
        # Made from a model that passed: only its own values can hold what the model did not.
        made_from = job.model
        self.validate(
            job.config, job.origins, job.values if made_from is not None else None, made_from
        )
        config = clamp_debug_time(job.config)
        clamped = config is not job.config
        array = bool(config["slurm"].get("array"))
        if array:
            # Every task of an array writes into the array's one --output pattern.
            config = array_groups.with_member_log_path(config)
        if clamped or (array and (job.model is None or job.values is None)):
            job = JobConfig(config, job.origins)
        elif array:
            # An array member made from a model: made from the model as a member.
            assert job.model is not None and job.values is not None
            model = job.model
            found = self.variants.get(model)
            if found is None:
                found = self.variants[model] = array_groups.MemberModel(model.model, model.paths)
            job = JobConfig(config, job.origins, found, found.values(job.values, config))
        # A config made from a model (which passed) runs the checks that read what it changed.
        made = job.model
        checks = self.checks
        if made is not None and made not in checks:
            changed = {p[0] for p in made.paths if isinstance(p[0], str)}
            checks[made] = checks_for(made.model, changed)
        check_job(config, job.origins, None if made is None else checks[made])
        name = config["job"]["name"]
        plan = plan_script(config, array=array)
        member = array_groups.member(config, plan) if array else None
        script = self.scripts.render(plan).encode("utf-8")
        entry = _lock_entry(job, point, self.overridden, f"jobs/{name}.sbatch", script, depends_on)
        return entry, script, job, member


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


def _collision(name: str, first: Point, second: Point, job: JobConfig) -> ConfigError:
    def show(p: Point) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in p.values.items()) + "}"

    return ConfigError(
        Problem(
            f"two jobs are both named '{name}': sweep points {first.index} {show(first)} "
            f"and {second.index} {show(second)}",
            origin_of(job.origins, ("job", "name")),
            key="job.name",
            hint="put the swept values into the name, e.g. "
            'project.name: "exp_\\${backend.megatron.lr}" inside the sweep',
        )
    )


def _lock_entry(
    job: JobConfig,
    point: Point,
    overridden: Sequence[str],
    script_path: str,
    script: bytes,
    depends_on: Sequence[str] = (),
) -> LockJob:
    config = job.config
    j = config["job"]
    params: dict[str, Any] = {}
    # Values written as templates (names, sibling paths) are derived, not swept: leave them out.
    swept = [k for k, v in point.values.items() if not _templated(v)]
    for dotted in [*swept, *overridden]:
        node: Any = config
        for key in key_path(dotted):
            if _has(node, key):
                node = node[key]
            else:
                break
        else:
            params[dotted] = node
    return LockJob(
        name=j["name"],
        stage=config.get("stage"),
        index=point.index,
        params=dict(sorted(params.items())),
        depends_on=tuple(depends_on),
        script=script_path,
        sha256=hashlib.sha256(script).hexdigest(),
        output_dir=j["base_output_dir"],
        log_path=j["log_path"],
        log_path_current=j.get("log_path_current"),
        start_conditions=tuple(j.get("start_conditions", ())),
        cancel_conditions=tuple(j.get("cancel_conditions", ())),
        inactivity_threshold_seconds=j.get("inactivity_threshold_seconds"),
        chain_repeat=j.get("chain_repeat", 1),
        restart=by_identity(_policies, j.get("restart", {}), RestartPolicy.from_json),
        log_events=tuple(j.get("log_events", ())),
        state_events=tuple(j.get("state_events", ())),
        array=bool(config["slurm"].get("array", False)),
        # What runs: the reconciler reads a Megatron job's log for its training progress.
        backend=config["backend"]["kind"],
        dependency="slurm" if j.get("dependency") == "slurm" else "reconciler",
        # Optional, and only written when set: bundles without one keep their bytes.
        finish_condition=j.get("finish_condition") or None,
        wandb=wandb_lock(config) or None,
    )


def _templated(value: Any) -> bool:
    """Whether a swept value is written as a template (its JSON text holds `${`)."""
    kind = type(value)
    if kind is str:
        return "${" in value  # JSON escapes neither '$' nor '{', nor makes them of others
    if kind in (int, float, bool) or value is None:
        return False
    return "${" in json.dumps(value)


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


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
