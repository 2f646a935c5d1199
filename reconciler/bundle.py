"""Read a compiled bundle: the lockfile (checked against its schema and version) and scripts.

The reconciler knows nothing of configs; the lockfile is its whole contract with the compiler.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from oellm.bundle_files import LOCK_NAME

from .errors import ReconcileError
from .model import ArrayGroup, LockJob

SUPPORTED_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    path: Path
    bundle_id: str
    project: str
    output_dir: str
    state_dir: str
    jobs: tuple[LockJob, ...]
    # The tag key kept across a move of the state dir (`--move-state`); None: derived.
    key: str | None = None
    moved: dict[str, str] = dataclasses.field(default_factory=dict)
    arrays: dict[str, ArrayGroup] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def root(self) -> Path:
        """Relative paths in a bundle are relative to the folder that holds it."""
        return self.path.resolve().parent

    @functools.cached_property
    def _by_name(self) -> dict[str, LockJob]:
        return {job.name: job for job in self.jobs}

    def resolve(self, path: str) -> Path:
        return (self.root / path) if not Path(path).is_absolute() else Path(path)

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    def job(self, name: str) -> LockJob:
        return self._by_name[name]

    def script_path(self, job: LockJob) -> Path:
        return self.path / job.script

    def array_of(self, job: LockJob) -> ArrayGroup | None:
        return self.arrays.get(job.array_group) if job.array_group else None


_SCHEMAS = ("lock.schema.json", "experiment.schema.json", "megatron.schema.json")


@functools.cache
def _schemas() -> dict[str, Any]:
    folder = importlib.resources.files("oellm.schemas")
    return {
        name: json.loads(folder.joinpath(name).read_text(encoding="utf-8")) for name in _SCHEMAS
    }


@functools.cache
def _validator() -> Draft202012Validator:
    registry: Registry[Any] = Registry()
    for name, schema in _schemas().items():
        registry = registry.with_resource(name, Resource.from_contents(schema))
    return Draft202012Validator(_schemas()["lock.schema.json"], registry=registry)


@functools.cache
def _fast_is_valid() -> Any:
    """A compiled validator for the common case (a valid lockfile of 10,000 jobs is checked in
    milliseconds); the detailed one only runs to explain a failure."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    schemas = _schemas()
    registry = jsonschema_rs.Registry(list(schemas.items()))
    return jsonschema_rs.Draft202012Validator(
        schemas["lock.schema.json"], registry=registry
    ).is_valid


def load_bundle(path: Path, check_scripts: bool = True) -> Bundle:
    """The bundle at `path`, its scripts checked against the lockfile. A recompile swaps the
    whole folder in at once, but a round may read the lockfile before the swap and a script
    after it: a script that does not match a lockfile that changed meanwhile is read again."""
    for _ in range(3):
        before = _lock_bytes(path / LOCK_NAME)
        try:
            return _load(path, check_scripts)
        except ScriptChanged:
            if _lock_bytes(path / LOCK_NAME) == before:
                raise
    return _load(path, check_scripts)


def _lock_bytes(lock_path: Path) -> bytes | None:
    try:
        return lock_path.read_bytes()
    except OSError:
        return None


class ScriptChanged(ReconcileError):
    """A script whose sha256 differs from the lockfile's."""


class Recompiled(ReconcileError):
    """The bundle on disk is no longer the one loaded: it was recompiled meanwhile."""


def check_scripts(bundle: Bundle, jobs: Iterable[LockJob]) -> None:
    """Check the scripts that submitting `jobs` runs (each job's own and its array's) against
    the lockfile: done just before submitting, not every round. ScriptChanged for a script
    edited after compile; Recompiled when it differs because the whole bundle was swapped for
    a recompiled one since it was loaded (its lockfile's bundle id changed too)."""
    checked: set[str] = set()
    for job in jobs:
        group = bundle.array_of(job)
        scripts = [(job.script, job.sha256)]
        if group is not None:
            scripts.append((group.script, group.sha256))
        for script, sha256 in scripts:
            if script in checked:
                continue
            checked.add(script)
            try:
                _check_script(bundle.path / script, sha256)
            except ScriptChanged:
                if _bundle_id(bundle.path / LOCK_NAME) != bundle.bundle_id:
                    raise Recompiled(
                        "the bundle was recompiled while this round read it",
                        str(bundle.path),
                        hint="run oellm reconcile again",
                    ) from None
                raise


def _bundle_id(lock_path: Path) -> str | None:
    try:
        data = json.loads(lock_path.read_bytes())
    except (OSError, ValueError):
        return None
    return data.get("bundle_id") if isinstance(data, dict) else None


def _load(path: Path, check_scripts: bool) -> Bundle:
    lock_path = path / LOCK_NAME
    if not lock_path.is_file():
        raise ReconcileError(
            f"not a bundle: it holds no {LOCK_NAME}",
            str(path),
            hint="compile one first: oellm compile exp.yaml -o " + str(path),
        )
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReconcileError(f"cannot read the lockfile: {exc}", str(lock_path)) from None
    version = data.get("version") if isinstance(data, dict) else None
    if version != SUPPORTED_VERSION:
        raise ReconcileError(
            f"lockfile version {version!r} is not supported (this oellm reads version "
            f"{SUPPORTED_VERSION})",
            str(lock_path),
            hint="recompile the bundle with this oellm, or use the oellm that wrote it",
        )
    fast = _fast_is_valid()
    errors = (
        []
        if fast is not None and fast(data)
        else sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.path)))
    )
    if errors:
        where = "/".join(map(str, errors[0].path))
        raise ReconcileError(
            f"the lockfile breaks its schema at {where or 'the top'}: {errors[0].message}",
            str(lock_path),
            hint="recompile the bundle rather than editing plan.lock.json",
        )
    jobs = tuple(
        LockJob(
            name=j["name"],
            stage=j["stage"],
            index=j["index"],
            params=j["params"],
            depends_on=tuple(j["depends_on"]),
            script=j["script"],
            sha256=j["sha256"],
            output_dir=j["output_dir"],
            log_path=j["log_path"],
            log_path_current=j["log_path_current"],
            start_conditions=tuple(j["start_conditions"]),
            cancel_conditions=tuple(j["cancel_conditions"]),
            chain_repeat=j["chain_repeat"],
            restart=j["restart"],
            array=j["array"],
            log_events=tuple(_with_inactivity(j)),
            state_events=tuple(j["state_events"]),
            array_group=j.get("array_group"),
            array_index=j.get("array_index"),
            dependency=j.get("dependency", "reconciler"),
            finish_condition=j.get("finish_condition"),
            backend=j.get("backend", "bash"),
            wandb=j.get("wandb"),
        )
        for j in data["jobs"]
    )
    bundle = Bundle(
        path=path,
        bundle_id=data["bundle_id"],
        project=data["project"]["name"],
        output_dir=data["project"]["output_dir"],
        state_dir=data["project"]["state_dir"],
        jobs=jobs,
        key=data["project"].get("key"),
        moved=dict(data.get("moved", {})),
        arrays={
            name: ArrayGroup(name, a["script"], a["sha256"], a["size"], a["throttle"])
            for name, a in data.get("arrays", {}).items()
        },
    )
    for job in jobs:
        if job.array_group and job.array_group not in bundle.arrays:
            raise ReconcileError(
                f"job {job.name} is in array {job.array_group!r}, which the lockfile does not "
                "describe",
                str(lock_path),
                hint="recompile the bundle rather than editing plan.lock.json",
            )
    bundle = dataclasses.replace(
        bundle,
        jobs=tuple(
            dataclasses.replace(job, array_throttle=bundle.arrays[job.array_group].throttle)
            if job.array_group
            else job
            for job in jobs
        ),
    )
    if check_scripts:
        for job in bundle.jobs:
            _check_script(bundle.path / job.script, job.sha256)
        for group in bundle.arrays.values():
            _check_script(bundle.path / group.script, group.sha256)
    return bundle


def _with_inactivity(job: dict[str, Any]) -> list[dict[str, Any]]:
    """`job.inactivity_threshold_seconds` is shorthand for an inactivity event that restarts."""
    events = list(job["log_events"])
    seconds = job.get("inactivity_threshold_seconds")
    if seconds:
        events.append(
            {
                "name": "inactivity",
                "kind": "inactivity",
                "seconds": seconds,
                "actions": [{"kind": "restart"}],
            }
        )
    return events


def _check_script(script: Path, sha256: str) -> None:
    try:
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
    except OSError as exc:
        raise ScriptChanged(f"cannot read the job script: {exc.strerror}", str(script)) from None
    if digest != sha256:
        raise ScriptChanged(
            "the script was changed after compile (its sha256 differs from plan.lock.json)",
            str(script),
            hint="recompile the bundle from the config, or pass --allow-edited to run the "
            "edited script as it is",
        )
