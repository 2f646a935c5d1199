"""Read a compiled bundle: the lockfile (checked against its schema and version) and scripts.

The reconciler knows nothing of configs; the lockfile is its whole contract with the compiler.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from .errors import ReconcileError

SUPPORTED_VERSION = 1
LOCK_NAME = "plan.lock.json"


@dataclass(frozen=True)
class LockJob:
    name: str
    stage: str | None
    index: int
    params: dict[str, Any]
    depends_on: tuple[str, ...]
    script: str
    sha256: str
    output_dir: str
    log_path: str
    log_path_current: str | None
    start_conditions: tuple[dict[str, Any], ...]
    cancel_conditions: tuple[dict[str, Any], ...]
    chain_repeat: int
    restart: dict[str, Any]
    array: bool


@dataclass(frozen=True)
class Bundle:
    path: Path
    bundle_id: str
    project: str
    output_dir: str
    state_dir: str
    jobs: tuple[LockJob, ...]

    @property
    def root(self) -> Path:
        """Relative paths in a bundle are relative to the folder that holds it."""
        return self.path.resolve().parent

    def resolve(self, path: str) -> Path:
        return (self.root / path) if not Path(path).is_absolute() else Path(path)

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    def job(self, name: str) -> LockJob:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def script_path(self, job: LockJob) -> Path:
        return self.path / job.script


@functools.cache
def _validator() -> Draft202012Validator:
    schemas = importlib.resources.files("oellm.schemas")
    registry: Registry[Any] = Registry()
    loaded = {}
    for name in ("lock.schema.json", "experiment.schema.json", "megatron.schema.json"):
        loaded[name] = json.loads(schemas.joinpath(name).read_text(encoding="utf-8"))
        registry = registry.with_resource(name, Resource.from_contents(loaded[name]))
    return Draft202012Validator(loaded["lock.schema.json"], registry=registry)


def load_bundle(path: Path, check_scripts: bool = True) -> Bundle:
    lock_path = path / LOCK_NAME
    if not lock_path.is_file():
        raise ReconcileError(
            "not a bundle: it holds no plan.lock.json",
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
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.path)))
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
    )
    if check_scripts:
        for job in jobs:
            _check_script(bundle, job)
    return bundle


def _check_script(bundle: Bundle, job: LockJob) -> None:
    script = bundle.script_path(job)
    try:
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
    except OSError as exc:
        raise ReconcileError(f"cannot read the job script: {exc.strerror}", str(script)) from None
    if digest != job.sha256:
        raise ReconcileError(
            "the script was changed after compile (its sha256 differs from plan.lock.json)",
            str(script),
            hint="recompile the bundle from the config instead of editing scripts",
        )
