"""One sweep point compiled into its lock entry and files (resolve, validate, check, plan,
render), and each stage's results taken in: the siblings later stages read, name clashes, array
members, checkpoint loaders. The flow over stages and the bundle-wide steps are `pipeline.py`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from oellm.lockfile.jsonbytes import PrettyJson
from oellm.lockfile.jsonshape import ShapedJson
from oellm.lockfile.model import LockJob, RestartPolicy, replaced

from . import array_groups
from .checks import Checks, check_job, checks_for
from .errors import ConfigError, Problem
from .leaves import Made
from .megatron_checks import Loader, loader
from .reads import job_reads
from .render_shape import ShapedScripts
from .resolve import JobConfig, ResolvedParts, resolve_job
from .script import plan_script
from .siblings import Sibling, SiblingIndex, gather, sibling_of
from .sweep_point import Point
from .time_limits import clamp_debug_time
from .tree import Memo, by_identity, key_path, origin_of
from .validate import Validator
from .value_sizes import static_parts
from .wandb import wandb_lock

# One list for every job without dependencies (a large sweep holds many lock entries).
_NO_JOBS: list[str] = []
_policies: Memo = {}  # the restart policy of each job.restart that jobs share

JobHook = Callable[[str, JobConfig], None]
"""Called with each job's name and resolved config (`oellm config --job`)."""


@dataclass(frozen=True)
class _Made:
    """What compiling one sweep point gives (sent back by a worker process, `fanout.py`)."""

    entry: LockJob | None  # None: a filter removed the point
    sibling: Sibling | None = None  # for the jobs of later stages that reference it
    member: array_groups.Member | None = None  # a job of an array
    loader: Loader | None = None  # a Megatron job that loads a checkpoint
    job: JobConfig | None = None  # its resolved config, for `on_job`


class PointWork:
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


def merge(
    stage_points: list[Point],
    results: Iterator[_Made],
    work: PointWork,
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
