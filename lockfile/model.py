"""The lockfile's data as typed records: what the compiler writes and the reconciler reads.

Pure: no I/O, no JSON. `writer.py` turns these records into `plan.lock.json`, `codec.py` back.
Conditions and events stay the JSON mappings the schema describes (their `$defs` are shared
with the experiment schema): the reconciler dispatches on their `class_name`/`kind`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_RESTART_KEYS = (
    "on",
    "max_attempts",
    "infra_restarts",
    "code_restarts",
    "backoff_seconds",
    "progress_file",
    "without_progress",
)
# Restart keys the schema does not let be null: None is written as no key at all.
_NOT_NULL = frozenset({"on", "max_attempts", "backoff_seconds"})
_NONE_IF_LEFT_OUT = _NOT_NULL - {"on"}


@dataclass(frozen=True)
class Project:
    name: str
    output_dir: str
    state_dir: str
    # The tag key kept across a move of the state dir (`--move-state`); None: derived.
    key: str | None = None
    # The site's submit limit (`slurm.limits.max_jobs`), when the preset sets one: the
    # reconciler's default count budget per round.
    max_jobs: int | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """`job.restart`: when a finished attempt is followed by another. Infrastructure and code
    failures have separate budgets; with a progress file, attempts that did not advance the
    checkpoint count against `without_progress`."""

    on: tuple[str, ...] = ()
    max_attempts: int | None = None
    infra_restarts: int | None = None
    code_restarts: int | None = None
    backoff_seconds: float | None = None
    progress_file: str | None = None
    without_progress: int | None = None

    # Keys the config left out (a config may delete one, `~job.restart.on`): not written, so
    # that such a bundle keeps its bytes. A value of None is written as null where the schema
    # allows it (the job library's default sets these keys to null), else left out too.
    unset: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RestartPolicy:
        return _policy(
            tuple(data.get("on", ())),
            data.get("max_attempts"),
            data.get("infra_restarts"),
            data.get("code_restarts"),
            data.get("backoff_seconds"),
            data.get("progress_file"),
            data.get("without_progress"),
            # Left out, these two are None already: nothing more to remember.
            frozenset(k for k in _RESTART_KEYS if k not in data and k not in _NONE_IF_LEFT_OUT),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _RESTART_KEYS:
            value = getattr(self, key)
            if key in self.unset or (value is None and key in _NOT_NULL):
                continue
            out[key] = list(value) if key == "on" else value
        return out


@functools.lru_cache(maxsize=256, typed=True)
def _policy(*fields: Any) -> RestartPolicy:
    """One record per distinct policy: the jobs of a sweep mostly share theirs, and a bundle
    of 100,000 jobs should not hold 100,000 copies. Typed: `0` and `0.0` are written apart."""
    return RestartPolicy(*fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class LockJob:
    """One job of the bundle. Slotted: a bundle of 100,000 jobs holds 100,000 of them."""

    name: str
    script: str  # bundle path of the job's own sbatch script
    sha256: str  # of that script
    output_dir: str
    log_path: str
    stage: str | None = None
    index: int = 0  # the sweep point
    params: dict[str, Any] = field(default_factory=dict)  # swept and overridden values
    depends_on: tuple[str, ...] = ()
    log_path_current: str | None = None
    start_conditions: tuple[dict[str, Any], ...] = ()
    cancel_conditions: tuple[dict[str, Any], ...] = ()
    # Kept as written: `watched_log_events` adds the event it stands for.
    inactivity_threshold_seconds: int | None = None
    chain_repeat: int = 1
    restart: RestartPolicy = RestartPolicy()
    array: bool = False
    log_events: tuple[dict[str, Any], ...] = ()
    state_events: tuple[dict[str, Any], ...] = ()
    # An array member (`slurm.array: true`): task `array_index` of its group's shared script;
    # submitted with the other ready members as one --array job, or alone as --array=<index>.
    array_group: str | None = None
    array_index: int | None = None
    # The group's `slurm.array_throttle` (its `ArrayGroup.throttle`, not written per job): at
    # most this many of its members in flight at once, across the arrays they went out in.
    array_throttle: int | None = None
    # `slurm`: submitted with --dependency=afterok as soon as its upstream jobs are queued.
    dependency: str = "reconciler"
    # `job.finish_condition`: when it holds, the job's output already exists and it is not
    # submitted (a condition like the start conditions; None: none).
    finish_condition: dict[str, Any] | None = None
    # What the script runs (`megatron`, `bash`): a Megatron job's log is read for metrics.
    backend: str = "bash"
    # W&B: {"dir", "run_id"} of a job that logs to it, for `oellm reconcile --sync-wandb`.
    wandb: dict[str, str] | None = None
    # Paths the job reads that must exist before it starts, for `oellm check`.
    reads: tuple[str, ...] = ()

    @property
    def watched_log_events(self) -> tuple[dict[str, Any], ...]:
        """The log events to watch: `log_events`, plus the inactivity event that restarts
        which `inactivity_threshold_seconds` is shorthand for (config sugar, kept as written
        in the lockfile: lowering it at compile time would change every such bundle's bytes)."""
        seconds = self.inactivity_threshold_seconds
        if not seconds:
            return self.log_events
        inactivity = {
            "name": "inactivity",
            "kind": "inactivity",
            "seconds": seconds,
            "actions": [{"kind": "restart"}],
        }
        return (*self.log_events, inactivity)


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(LockJob))
_JOB_INDEX = {name: number for number, name in enumerate(_JOB_FIELDS)}
_JOB_VALUES = operator.attrgetter(*_JOB_FIELDS)
# Each field's slot, set directly: a frozen dataclass's own __init__ sets each through
# object.__setattr__, which costs more than the rest of making an array member.
_JOB_SLOTS = tuple(getattr(LockJob, name).__set__ for name in _JOB_FIELDS)


def replaced(job: LockJob, **changes: Any) -> LockJob:
    """`dataclasses.replace(job, **changes)` at a fraction of its cost (the compiler copies
    each member of an array once; a bundle may hold 100,000)."""
    values = list(_JOB_VALUES(job))
    for name, value in changes.items():
        number = _JOB_INDEX.get(name)
        if number is None:
            raise TypeError(f"LockJob has no field {name!r}")
        values[number] = value
    made: LockJob = object.__new__(LockJob)
    for put, value in zip(_JOB_SLOTS, values, strict=True):
        put(made, value)
    return made


@dataclass(frozen=True)
class ArrayGroup:
    """One SLURM job array of the bundle: its shared script picks a member by task index."""

    name: str
    script: str
    sha256: str
    size: int
    throttle: int | None
    stage: str | None = None


@dataclass(frozen=True)
class Lock:
    """The whole lockfile. `bundle_id` digests everything but itself and `compiled_with`."""

    bundle_id: str
    project: Project
    jobs: tuple[LockJob, ...]
    # Jobs renamed since earlier compiles, old name -> new name.
    moved: Mapping[str, str] = dataclasses.field(default_factory=dict)
    arrays: Mapping[str, ArrayGroup] = dataclasses.field(default_factory=dict)
    # What the bundle was compiled from (oellm's version, the arguments); not in bundle_id.
    compiled_with: Mapping[str, Any] | None = None
