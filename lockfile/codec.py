"""`plan.lock.json` read back: the one reader (`loads`: the version, the schema, the records;
with `fastread` for bytes read strictly before), the lockfile's version and its one error.
The writer is `writer.py`, the schema check both use `schema.py`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from oellm.bundle_files import LOCK_NAME
from oellm.errors import OellmError

from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy
from .schema import SCHEMAS, schema_error

VERSION = 1
PROVENANCE = "compiled_with"  # the field outside bundle_id
_RECOMPILE = "recompile the bundle rather than editing plan.lock.json"


class LockfileError(OellmError):
    """A lockfile that cannot be read: not JSON, another version, or off its schema."""

    def __init__(self, message: str, path: str, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint)

    def render(self) -> str:
        return f"{self.path}: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")


def bundle_id_of(data: bytes | str) -> str | None:
    """The `bundle_id` written in lockfile data, unchecked; None when there is none to read
    (a round compares it with the one it loaded, to notice a recompile)."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    found = document.get("bundle_id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


class Proven(Protocol):
    """Where the digests of lockfile bytes read strictly before are kept (the reconciler keeps
    the last one in the state dir). Told the lockfile's `project.state_dir`, to find that
    place."""

    def known(self, digest: str, state_dir: str) -> bool: ...

    def keeps(self, state_dir: str) -> bool:
        """Whether `remember` would keep a digest there (a state dir not made yet would not)."""
        ...

    def remember(self, digest: str, state_dir: str) -> None: ...


def loads(
    data: bytes | str, where: str, proven: Proven | None = None, state_dir: str | None = None
) -> Lock:
    """The lockfile in `data` (read from `where`, named in errors): its version and schema
    checked, as records. With `proven`, bytes read strictly before are read again by the
    compiled reader (`fastread`) alone, and bytes both readers agree on are remembered.
    `state_dir`: what `fastread.state_dir(data)` says, when the caller has asked already."""
    if proven is None or isinstance(data, str):
        return _strict(data, where)
    from . import fastread

    # The state dir alone, read first (its bytes unchecked): a read that cannot use a digest
    # (no state dir yet, as for `oellm cancel` of a bundle never reconciled) costs this only.
    if state_dir is None:
        state_dir = fastread.state_dir(data)
    if state_dir is None:
        return _strict(data, where)
    digest = _reader_digest(data)
    if proven.known(digest, state_dir):
        fast = _fast(data, where)
        if fast is not None and fast.project.state_dir == state_dir:
            return fast
    lock = _strict(data, where)
    if proven.keeps(state_dir):
        fast = _fast(data, where)
        # Compared whole, by repr: types too (`0` and `0.0`, `1` and `true` are equal values).
        if fast is not None and repr(fast) == repr(lock):
            proven.remember(digest, state_dir)
    return lock


def _reader_digest(data: bytes) -> str:
    """The digest kept for lockfile bytes: of the bytes and of what judged them (this oellm
    and its lockfile schemas), so that another oellm reads them strictly again."""
    digest = hashlib.sha256(_judge())
    digest.update(data)
    return digest.hexdigest()


@functools.cache
def _judge() -> bytes:
    """What judged lockfile bytes: this oellm (its version, and the source of both readers,
    of the strict one's schema check and of the records they make, which a build may change
    without a new version), msgspec's version, and the schemas."""
    import msgspec

    from oellm import __version__

    from . import fastread, model, schema

    folder = importlib.resources.files("oellm.schemas")
    parts = [f"{__version__}:{VERSION}:{msgspec.__version__}".encode()]
    parts += [folder.joinpath(name).read_bytes() for name in SCHEMAS]
    for module in (sys.modules[__name__], schema, fastread, model):
        source = getattr(module, "__file__", None)
        parts.append(Path(source).read_bytes() if source else module.__name__.encode())
    return hashlib.sha256(b"\0".join(parts)).digest()


def _fast(data: bytes, where: str) -> Lock | None:
    from . import fastread

    found = fastread.decode(data)
    if found is None:
        return None
    head, jobs = found
    try:
        lock = _lock(head, where, tuple(jobs))
    except (LockfileError, LookupError, TypeError, AttributeError, ValueError):
        return None
    # Its project tells where the digests are kept: texts, as the schema says, or none.
    project = lock.project
    if not all(type(text) is str for text in (project.name, project.output_dir, project.state_dir)):
        return None
    return lock


def _strict(data: bytes | str, where: str) -> Lock:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise LockfileError(f"cannot read the lockfile: {exc}", where, _RECOMPILE) from None
    except RecursionError:
        raise LockfileError(
            "cannot read the lockfile: it is nested too deeply", where, _RECOMPILE
        ) from None
    version = document.get("version") if isinstance(document, dict) else None
    if version != VERSION:
        raise LockfileError(
            f"lockfile version {version!r} is not supported (this oellm reads version {VERSION})",
            where,
            hint="recompile the bundle with this oellm, or use the oellm that wrote it",
        )
    found = schema_error(document)
    if found is not None:
        path, message = found
        raise LockfileError(
            f"the lockfile breaks its schema at {path or 'the top'}: {message}", where, _RECOMPILE
        )
    return _lock(document, where)


def _lock(data: Mapping[str, Any], where: str, jobs: tuple[LockJob, ...] | None = None) -> Lock:
    """The lock of decoded lockfile data; `jobs`: its jobs, already made (`fastread`)."""
    arrays = {
        name: ArrayGroup(name, a["script"], a["sha256"], a["size"], a["throttle"], stage=a["stage"])
        for name, a in data.get("arrays", {}).items()
    }
    project = data["project"]
    return Lock(
        bundle_id=data["bundle_id"],
        project=Project(
            project["name"],
            project["output_dir"],
            project["state_dir"],
            project.get("key"),
            project.get("max_jobs"),
        ),
        jobs=tuple(_job(j, arrays, where) for j in data["jobs"]) if jobs is None else jobs,
        moved=dict(data.get("moved", {})),
        arrays=arrays,
        compiled_with=data.get(PROVENANCE),
    )


def _job(j: Mapping[str, Any], arrays: Mapping[str, ArrayGroup], where: str) -> LockJob:
    group = j.get("array_group")
    if group is not None and group not in arrays:
        raise LockfileError(
            f"job {j['name']} is in array {group!r}, which the lockfile does not describe",
            where,
            _RECOMPILE,
        )
    return LockJob(
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
        inactivity_threshold_seconds=j["inactivity_threshold_seconds"],
        chain_repeat=j["chain_repeat"],
        restart=RestartPolicy.from_json(j["restart"]),
        array=j["array"],
        log_events=tuple(j["log_events"]),
        state_events=tuple(j["state_events"]),
        array_group=group,
        array_index=j.get("array_index"),
        array_throttle=arrays[group].throttle if group is not None else None,
        dependency=j.get("dependency", "reconciler"),
        finish_condition=j.get("finish_condition"),
        backend=j.get("backend", "bash"),
        wandb=j.get("wandb"),
        reads=tuple(j.get("reads", ())),
    )


__all__ = [
    "LOCK_NAME",
    "PROVENANCE",
    "VERSION",
    "LockfileError",
    "Proven",
    "bundle_id_of",
    "loads",
]
