"""Read a compiled bundle: the lockfile (checked against its schema and version) and scripts.

The reconciler knows nothing of configs; the lockfile is its whole contract with the compiler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oellm.bundle_files import LOCK_NAME
from oellm.lockfile.codec import LockfileError, bundle_id_of, loads

from .errors import ReconcileError
from .model import ArrayGroup, LockJob
from .record_file import write_bytes_atomic


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
    max_jobs: int | None = None  # the site's submit limit (slurm.limits.max_jobs), when set

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


def load_bundle(
    path: Path, check_scripts: bool = True, data: bytes | None = None, state_dir: str | None = None
) -> Bundle:
    """The bundle at `path`, its scripts checked against the lockfile. A recompile swaps the
    whole folder in at once, but a round may read the lockfile before the swap and a script
    after it: a script that does not match a lockfile that changed meanwhile is read again.
    `data`: the lockfile's bytes, read already (and `state_dir`: the state dir they name, as
    `fastread.state_dir` reads it)."""
    if data is None:
        data, state_dir = lock_bytes(path / LOCK_NAME), None
    for _ in range(3):
        try:
            return _load(path, check_scripts, data, state_dir)
        except ScriptChanged:
            fresh = lock_bytes(path / LOCK_NAME)
            if fresh == data:
                raise
            data, state_dir = fresh, None
    return _load(path, check_scripts, data, state_dir)


def lock_bytes(lock_path: Path) -> bytes | None:
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
        return bundle_id_of(lock_path.read_bytes())
    except OSError:
        return None


def _load(
    path: Path, check_scripts: bool, data: bytes | None, state_dir: str | None = None
) -> Bundle:
    lock_path = path / LOCK_NAME
    if not lock_path.is_file():
        raise ReconcileError(
            f"not a bundle: it holds no {LOCK_NAME}",
            str(path),
            hint="compile one first: oellm compile exp.yaml -o " + str(path),
        )
    try:
        if data is None:
            data = lock_path.read_bytes()  # for the error it raises
        lock = loads(data, str(lock_path), _LastRead(path), state_dir)
    except OSError as exc:
        raise ReconcileError(f"cannot read the lockfile: {exc}", str(lock_path)) from None
    except LockfileError as exc:
        raise ReconcileError(exc.message, exc.path, exc.hint) from None
    bundle = Bundle(
        path=path,
        bundle_id=lock.bundle_id,
        project=lock.project.name,
        output_dir=lock.project.output_dir,
        state_dir=lock.project.state_dir,
        jobs=lock.jobs,
        key=lock.project.key,
        moved=dict(lock.moved),
        arrays=dict(lock.arrays),
        max_jobs=lock.project.max_jobs,
    )
    if check_scripts:
        for job in bundle.jobs:
            _check_script(bundle.path / job.script, job.sha256)
        for group in bundle.arrays.values():
            _check_script(bundle.path / group.script, group.sha256)
    return bundle


# The digest of the lockfile bytes last read strictly, in the state dir: a later round reads
# the same bytes again without their schema check (`codec.loads`). Lost, the next round checks.
LAST_READ_NAME = "lockfile.sha256"


class _LastRead:
    """`codec.Proven` in the state dir of the lock read. A cache: a read that fails is a miss,
    a write that fails is skipped, and a read-only command does not create the state dir."""

    def __init__(self, bundle_path: Path) -> None:
        self.bundle_path = bundle_path

    def _file(self, state_dir: str) -> Path:
        return state_folder(self.bundle_path, state_dir) / LAST_READ_NAME

    def known(self, digest: str, state_dir: str) -> bool:
        try:
            return self._file(state_dir).read_text(encoding="ascii").strip() == digest
        except (OSError, ValueError):
            return False

    def keeps(self, state_dir: str) -> bool:
        return self._file(state_dir).parent.is_dir()

    def remember(self, digest: str, state_dir: str) -> None:
        with contextlib.suppress(OSError):
            write_bytes_atomic(self._file(state_dir), f"{digest}\n".encode(), durable=False)


def state_folder(bundle_path: Path, state_dir: str) -> Path:
    """The state dir a lockfile's `project.state_dir` names: relative to the folder that holds
    the bundle (as `Bundle.state_path`)."""
    state = Path(state_dir)
    return state if state.is_absolute() else bundle_path.resolve().parent / state


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
